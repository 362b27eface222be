# Runs at install time (cmake --install, cpack), included by packaging/CMakeLists.txt through
# install(SCRIPT): the unit files and the settings file go where the prefix being installed to
# puts them, not where the build tree's configure-time prefix would. `cpack` installs with prefix
# /usr (settings in /etc, programs in /usr/sbin) whatever the build tree was configured with.
# Inputs (set by an install(CODE) line before this script): TG_PACKAGING_SRC, TG_PACKAGING_BIN,
# TG_SBINDIR (relative, e.g. "sbin"), TG_UNITDIR (relative to the prefix).
set(prefix "${CMAKE_INSTALL_PREFIX}")
if(prefix STREQUAL "/usr")
  set(etc "/etc")
else()
  set(etc "${prefix}/etc")
endif()

set(TOLLGATE_SBINDIR "${prefix}/${TG_SBINDIR}")
set(staged "${TG_PACKAGING_BIN}/install-staging")
file(REMOVE_RECURSE "${staged}")
foreach(unit tollgated.service tollgate-filter.service)
  configure_file("${TG_PACKAGING_SRC}/systemd/${unit}.in" "${staged}/${unit}" @ONLY)
endforeach()
file(INSTALL "${staged}/tollgated.service" "${staged}/tollgate-filter.service"
             "${TG_PACKAGING_SRC}/systemd/tollgated.socket"
             "${TG_PACKAGING_SRC}/systemd/tollgated-control.socket"
     DESTINATION "${prefix}/${TG_UNITDIR}"
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(INSTALL "${TG_PACKAGING_SRC}/tollgate.toml" DESTINATION "${etc}/tollgate"
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
# The rules directory ships empty (tmpfiles.d creates it too if it goes missing).
file(MAKE_DIRECTORY "$ENV{DESTDIR}${etc}/tollgate/rules.d")

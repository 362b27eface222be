#!/usr/bin/env python3
"""Writes a synthetic domain blocklist for `scripts/bench analysis` (issue 4: generate, download none).

The list looks like the third-party lists users load: mostly hosts format (`0.0.0.0 name`, some
`127.0.0.1`, a few lines with several names), some plain domain-per-line, comment blocks, trailing
comments, blank lines, a hosts-file preamble of localhost junk. Names have 2 to 6 labels under a
weighted mix of real TLDs, with label lengths like those of real ad and tracker domains. The output
is a function of the arguments only (seeded), so every run benchmarks the same bytes.

usage: make_blocklist.py OUTPUT [--domains N] [--seed S]
"""

import argparse
import random
import sys

# (tld, weight): roughly the shape of public ad/tracker lists, .com dominating.
TLDS = [
    ("com", 46), ("net", 9), ("org", 4), ("io", 3), ("ru", 4), ("de", 2), ("info", 2),
    ("xyz", 3), ("top", 3), ("co.uk", 1), ("com.br", 1), ("cn", 2), ("jp", 1), ("fr", 1),
    ("online", 2), ("site", 2), ("club", 1), ("biz", 1), ("pl", 1), ("in", 1), ("co", 1),
    ("me", 1), ("tk", 1), ("us", 1), ("eu", 1), ("nl", 1), ("it", 1), ("es", 1), ("com.au", 1),
]

SUBDOMAIN_WORDS = [
    "www", "ads", "ad", "adserver", "track", "tracking", "tracker", "metrics", "stats", "analytics",
    "pixel", "cdn", "static", "img", "api", "log", "logs", "events", "collect", "beacon", "t",
    "s", "m", "mobile", "banner", "banners", "click", "clicks", "count", "counter", "telemetry",
    "sync", "match", "rtb", "bid", "pagead", "affiliate", "partner", "promo", "survey", "data",
]

SYLLABLES = [
    "ad", "ads", "bid", "click", "track", "meter", "pixel", "view", "media", "net", "link", "go",
    "top", "smart", "fast", "data", "cloud", "star", "pro", "max", "best", "tag", "zone", "hub",
    "web", "soft", "tech", "mob", "app", "sys", "lab", "ly", "io", "yo", "ex", "ora", "ix",
    "on", "er", "ia", "ify", "sense", "serve", "cast", "flow", "point", "wave", "shift", "trk",
]

ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def word_label(rng):
    parts = [rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))]
    label = ("-" if rng.random() < 0.15 else "").join(parts)
    if rng.random() < 0.2:
        label += str(rng.randrange(1, 1000))
    return label[:63]


def random_label(rng):
    # Machine-made names: hashes, ids, numbered hosts. Lengths mostly 4-16, a tail up to 40.
    length = min(40, max(2, int(rng.lognormvariate(2.2, 0.5))))
    return "".join(rng.choice(ALNUM) for _ in range(length))


def domain(rng, tld_names, tld_weights):
    tld = rng.choices(tld_names, tld_weights)[0]
    base = word_label(rng) if rng.random() < 0.7 else random_label(rng)
    labels = [base, tld]
    # 2 to 6 labels in all: the registrable name plus 0-3 (rarely 4) subdomain labels.
    extra = rng.choices((0, 1, 2, 3, 4), (38, 36, 16, 7, 3))[0]
    for _ in range(extra):
        if len(labels) + tld.count(".") >= 6:
            break
        r = rng.random()
        if r < 0.55:
            sub = rng.choice(SUBDOMAIN_WORDS)
            if rng.random() < 0.25:
                sub += str(rng.randrange(1, 30))
        elif r < 0.85:
            sub = random_label(rng)
        else:
            sub = word_label(rng)
        labels.insert(0, sub)
    return ".".join(labels)


PREAMBLE = """# Synthetic blocklist for scripts/bench analysis (bench/make_blocklist.py).
# Not a real list: names are generated, seeded, and block nothing anyone owns.
#
127.0.0.1 localhost
127.0.0.1 localhost.localdomain
255.255.255.255 broadcasthost
::1 localhost ip6-localhost ip6-loopback
fe80::1%lo0 localhost
0.0.0.0 0.0.0.0

"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output")
    parser.add_argument("--domains", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    tld_names = [t for t, _ in TLDS]
    tld_weights = [w for _, w in TLDS]

    seen = set()
    names = []
    while len(names) < args.domains:
        name = domain(rng, tld_names, tld_weights)
        if name in seen:
            continue
        seen.add(name)
        names.append(name)
    del seen

    out = [PREAMBLE]
    i = 0
    while i < len(names):
        if rng.random() < 0.001:
            out.append("\n# ---- section %d: %s ----\n" % (i, rng.choice(SUBDOMAIN_WORDS)))
        r = rng.random()
        if r < 0.02 and i + 3 <= len(names):
            # Several names on one hosts line.
            k = rng.randrange(2, 4)
            line = "0.0.0.0 " + " ".join(names[i:i + k])
            i += k
        else:
            name = names[i]
            i += 1
            if r < 0.50:
                line = "0.0.0.0 " + name
            elif r < 0.65:
                line = "127.0.0.1\t" + name
            elif r < 0.66:
                line = ":: " + name
            else:
                line = name
        if rng.random() < 0.01:
            line += "  # " + rng.choice(SUBDOMAIN_WORDS)
        out.append(line + "\n")
        if rng.random() < 0.002:
            out.append("\n")

    with open(args.output, "w", encoding="ascii", newline="\n") as f:
        f.writelines(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes the MaxMind-format test databases GeoIP tests read.

    geoip_testdb.py DIR [NETWORKS]

DIR/country.mmdb (database type GeoLite2-Country) and DIR/asn.mmdb
(GeoLite2-ASN), both IPv6 trees holding IPv4 too, as MaxMind ships them,
written with mmdb-writer (PyPI). Documentation address ranges only:

| network          | country                   | ASN   | AS organization      |
| 198.51.100.0/24  | DE                        | 64500 | Example Transit GmbH |
| 203.0.113.0/24   | (none; registered JP)     | 64501 | Beispiel K.K.        |
| 2001:db8:1::/48  | FR                        | 64502 | Exemple SA           |
| 192.0.2.0/24     | not in either database    |       |                      |

tests/data/geoip/*.mmdb were written by this script (the unit tests read
them); the end-to-end suite writes its own with it. With NETWORKS, that many
more IPv4 /24 networks (seeded, disjoint from the ones above) with countries
and ASNs, for benches/geoip.sh: a tree the size of a real database's.
"""
import random
import sys

from mmdb_writer import MMDBWriter, MmdbU32
from netaddr import IPSet


COUNTRIES = ["US", "DE", "FR", "GB", "JP", "CN", "BR", "IN", "RU", "NL", "SE", "AU", "CA", "KR", "ZA"]


def random_networks(count):
    """`count` distinct /24s from 1.0.0.0–126.255.255.0 (the bench draws its
    addresses from the same generator, benches/src/bin/geoip_bench.rs)."""
    rng = random.Random(20261204)
    seen = set()
    while len(seen) < count:
        seen.add((rng.randrange(1, 127), rng.randrange(0, 256), rng.randrange(0, 256)))
    return [f"{a}.{b}.{c}.0/24" for a, b, c in sorted(seen)]


def main():
    out = sys.argv[1]
    extra = random_networks(int(sys.argv[2])) if len(sys.argv) > 2 else []
    country = MMDBWriter(6, "GeoLite2-Country", languages=["en"], description="SecureNet test", ipv4_compatible=True)
    country.insert_network(IPSet(["198.51.100.0/24"]), {"country": {"iso_code": "DE", "names": {"en": "Germany"}}})
    # Anycast-like: no located country, only the registered one.
    country.insert_network(IPSet(["203.0.113.0/24"]), {"registered_country": {"iso_code": "JP"}})
    country.insert_network(IPSet(["2001:db8:1::/48"]), {"country": {"iso_code": "FR"}})
    for i, net in enumerate(extra):
        country.insert_network(IPSet([net]), {"country": {"iso_code": COUNTRIES[i % len(COUNTRIES)]}})
    country.to_db_file(f"{out}/country.mmdb")

    asn = MMDBWriter(6, "GeoLite2-ASN", languages=["en"], description="SecureNet test", ipv4_compatible=True)
    for net, number, org in [
        ("198.51.100.0/24", 64500, "Example Transit GmbH"),
        ("203.0.113.0/24", 64501, "Beispiel K.K."),
        ("2001:db8:1::/48", 64502, "Exemple SA"),
    ] + [(net, 1000 + i % 5000, f"Bench AS {i % 5000}") for i, net in enumerate(extra)]:
        asn.insert_network(
            IPSet([net]),
            {"autonomous_system_number": MmdbU32(number), "autonomous_system_organization": org},
        )
    asn.to_db_file(f"{out}/asn.mmdb")
    if extra:
        # The bench's addresses: nine in ten inside the networks, the rest
        # private or unrouted (not found).
        rng = random.Random(7)
        with open(f"{out}/addresses.txt", "w") as f:
            for _ in range(50_000):
                if rng.random() < 0.9:
                    a, b, c = rng.choice(extra).split(".")[:3]
                    f.write(f"{a}.{b}.{c}.{rng.randrange(1, 255)}\n")
                else:
                    f.write(f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}\n")


if __name__ == "__main__":
    main()

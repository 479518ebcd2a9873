#!/usr/bin/env python3
"""Writes the MaxMind-format test databases GeoIP tests read.

    geoip_testdb.py DIR

DIR/country.mmdb (database type GeoLite2-Country) and DIR/asn.mmdb
(GeoLite2-ASN), both IPv6 trees holding IPv4 too, as MaxMind ships them,
written with mmdb-writer (PyPI). Documentation address ranges only:

| network          | country                   | ASN   | AS organization      |
| 198.51.100.0/24  | DE                        | 64500 | Example Transit GmbH |
| 203.0.113.0/24   | (none; registered JP)     | 64501 | Beispiel K.K.        |
| 2001:db8:1::/48  | FR                        | 64502 | Exemple SA           |
| 192.0.2.0/24     | not in either database    |       |                      |

tests/data/geoip/*.mmdb were written by this script (the unit tests read
them); the end-to-end suite writes its own with it.
"""
import sys

from mmdb_writer import MMDBWriter, MmdbU32
from netaddr import IPSet


def main():
    out = sys.argv[1]
    country = MMDBWriter(6, "GeoLite2-Country", languages=["en"], description="SecureNet test", ipv4_compatible=True)
    country.insert_network(IPSet(["198.51.100.0/24"]), {"country": {"iso_code": "DE", "names": {"en": "Germany"}}})
    # Anycast-like: no located country, only the registered one.
    country.insert_network(IPSet(["203.0.113.0/24"]), {"registered_country": {"iso_code": "JP"}})
    country.insert_network(IPSet(["2001:db8:1::/48"]), {"country": {"iso_code": "FR"}})
    country.to_db_file(f"{out}/country.mmdb")

    asn = MMDBWriter(6, "GeoLite2-ASN", languages=["en"], description="SecureNet test", ipv4_compatible=True)
    for net, number, org in [
        ("198.51.100.0/24", 64500, "Example Transit GmbH"),
        ("203.0.113.0/24", 64501, "Beispiel K.K."),
        ("2001:db8:1::/48", 64502, "Exemple SA"),
    ]:
        asn.insert_network(
            IPSet([net]),
            {"autonomous_system_number": MmdbU32(number), "autonomous_system_organization": org},
        )
    asn.to_db_file(f"{out}/asn.mmdb")


if __name__ == "__main__":
    main()

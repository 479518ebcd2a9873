#!/usr/bin/env python3
"""Real Flight SQL clients against a SecureNet server, for tests/flight_sql.rs.

    flight_sql_client.py URI KEY OTHER_KEY

Runs the ADBC Flight SQL driver (adbc-driver-flightsql) and pyarrow.flight
as an analyst's tools would, as the organization of KEY, and prints one
JSON object with what each step answered (errors included, by class and
message); the Rust test asserts on it. OTHER_KEY belongs to another
organization: it presents KEY's ticket and must get only its own rows.
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.flight as fl


def error(e):
    return {"error": type(e).__name__, "message": str(e)}


def step(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the test asserts on what failed
        return error(e)


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, payload):
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def statement_query(sql):
    """google.protobuf.Any{CommandStatementQuery{query}}, by hand: what a
    client without Flight SQL bindings sends."""
    command = field(1, sql.encode())
    return field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + field(2, command)


def main():
    uri, key, other = sys.argv[1], sys.argv[2], sys.argv[3]
    out = {}

    def adbc(**kwargs):
        return flight_sql.connect(uri, db_kwargs=kwargs)

    bearer = {"adbc.flight.sql.authorization_header": f"Bearer {key}"}

    def query(conn, sql, parameters=None):
        with conn.cursor() as cur:
            cur.execute(sql, parameters)
            return cur.fetchall()

    def adbc_bearer():
        with adbc(**bearer) as conn:
            return {
                "count": query(conn, "SELECT count(*) AS n FROM logs")[0][0],
                "tenants": [r[0] for r in query(conn, "SELECT DISTINCT tenant_id FROM logs")],
                "other_tenant_rows": query(
                    conn, "SELECT count(*) FROM logs WHERE tenant_id <> (SELECT min(tenant_id) FROM logs)")[0][0],
            }
    out["adbc_bearer"] = step(adbc_bearer)

    def adbc_basic():
        with adbc(username="analyst", password=key) as conn:
            return query(conn, "SELECT count(*) AS n FROM logs")[0][0]
    out["adbc_basic"] = step(adbc_basic)

    def prepared():
        with adbc(**bearer) as conn:
            sshd = query(conn, "SELECT count(*) AS n FROM logs WHERE app = $1", ("sshd",))[0][0]
            # Twice with different values: the handle carries its binding.
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) AS n FROM logs WHERE app = $1", ("sshd",))
                first = cur.fetchall()[0][0]
                cur.execute("SELECT count(*) AS n FROM logs WHERE app = $1", ("no-such-app",))
                second = cur.fetchall()[0][0]
            return {"sshd": sshd, "again": first, "none": second}
    out["prepared"] = step(prepared)

    def metadata():
        with adbc(**bearer) as conn:
            objects = conn.adbc_get_objects(depth="columns").read_all().to_pylist()
            tables = {}
            for catalog in objects:
                for schema in catalog["catalog_db_schemas"] or []:
                    for table in schema["db_schema_tables"] or []:
                        name = f"{catalog['catalog_name']}.{schema['db_schema_name']}.{table['table_name']}"
                        tables[name] = [c["column_name"] for c in table["table_columns"] or []]
            info = conn.adbc_get_info()
            return {"tables": tables, "vendor_name": info.get("vendor_name"),
                    "vendor_version": info.get("vendor_version")}
    out["metadata"] = step(metadata)

    def forbidden():
        with adbc(**bearer) as conn:
            return query(conn, "DROP TABLE logs")
    out["forbidden"] = step(forbidden)

    def over_limit():
        with adbc(**bearer) as conn:
            return len(query(conn, "SELECT message FROM logs"))
    out["over_limit"] = step(over_limit)

    def bad_key():
        with adbc(**{"adbc.flight.sql.authorization_header": "Bearer sn_not_a_real_key"}) as conn:
            return query(conn, "SELECT 1")
    out["bad_key"] = step(bad_key)

    def pyarrow_flight():
        client = fl.FlightClient(uri)
        header = client.authenticate_basic_token(b"analyst", key.encode())
        options = fl.FlightCallOptions(headers=[header])
        descriptor = fl.FlightDescriptor.for_command(
            statement_query("SELECT app, count(*) AS n FROM logs GROUP BY app ORDER BY app"))
        info = client.get_flight_info(descriptor, options)
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
        # The other organization presents this organization's ticket.
        other_options = fl.FlightCallOptions(headers=[(b"authorization", f"Bearer {other}".encode())])
        replay = client.do_get(info.endpoints[0].ticket, other_options).read_all()
        return {
            "schema": [f"{f.name}:{f.type}" for f in info.schema],
            "rows": table.to_pylist(),
            "replayed_by_other": replay.to_pylist(),
        }
    out["pyarrow_flight"] = step(pyarrow_flight)

    def bad_input():
        """What a broken or hostile client sends: each must get an error of
        its own, and the server must go on serving."""
        client = fl.FlightClient(uri)
        header = client.authenticate_basic_token(b"analyst", key.encode())
        options = fl.FlightCallOptions(headers=[header])
        sql_type = "type.googleapis.com/arrow.flight.protocol.sql."
        answers = {}
        # A ticket that is no protobuf at all.
        answers["garbage_ticket"] = step(
            lambda: client.do_get(fl.Ticket(b"\xff\x00 not a ticket"), options).read_all())
        # A command of a type no Flight SQL server knows.
        answers["unknown_command"] = step(lambda: client.get_flight_info(
            fl.FlightDescriptor.for_command(field(1, b"type.googleapis.com/evil.Command") + field(2, b"")),
            options))
        # A statement ticket whose SQL is not UTF-8.
        answers["not_utf8"] = step(lambda: client.do_get(
            fl.Ticket(field(1, (sql_type + "TicketStatementQuery").encode()) + field(2, field(1, b"SELECT \xff\xfe"))),
            options).read_all())
        # Not SQL.
        answers["syntax"] = step(lambda: client.get_flight_info(
            fl.FlightDescriptor.for_command(statement_query("SELEC app FROM logs")), options))
        # A statement of 5 MB: over the server's message limit.
        answers["oversized"] = step(lambda: client.get_flight_info(
            fl.FlightDescriptor.for_command(statement_query("SELECT 1 -- " + "x" * (5 << 20))), options))
        # And then an ordinary query on the same connection.
        answers["then"] = step(lambda: client.do_get(
            client.get_flight_info(
                fl.FlightDescriptor.for_command(statement_query("SELECT count(*) AS n FROM logs")),
                options).endpoints[0].ticket,
            options).read_all().to_pylist())
        return answers
    out["bad_input"] = step(bad_input)

    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()

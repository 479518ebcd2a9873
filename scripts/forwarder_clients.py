"""Forwarders' own client libraries against SecureNet's receivers (tests/otlp.rs).

    forwarder_clients.py otlp-http ENDPOINT KEY RUN COUNT   # OpenTelemetry SDK, OTLP/HTTP protobuf, gzip
    forwarder_clients.py otlp-grpc ENDPOINT KEY RUN COUNT   # OpenTelemetry SDK, OTLP/gRPC, gzip
    forwarder_clients.py loki-protobuf URL KEY RUN COUNT    # Loki push.proto, snappy, as Promtail sends
    forwarder_clients.py gelf-udp HOST:PORT KEY RUN COUNT   # pygelf: zlib, chunked over 1300 bytes
    forwarder_clients.py gelf-tcp HOST:PORT KEY RUN COUNT   # pygelf: NUL-delimited
    forwarder_clients.py gelf-http HOST:PORT KEY RUN COUNT  # pygelf: POST /gelf, zlib
    forwarder_clients.py fluent HOST:PORT KEY RUN COUNT     # fluent-logger: Message mode, EventTime
    forwarder_clients.py grpc-raw ENDPOINT KEY CASE 1       # grpcio: a hand-built LogsService/Export message

Each emits COUNT records, one export (or push) per record so that a rate
limit between them is met, and prints JSON: the result of every export and
the SDK's own warnings (its retries).
"""

import json
import logging
import sys
import time


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def otlp(kind, endpoint, key, run, count):
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    if kind == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        exporter = OTLPLogExporter(
            endpoint=endpoint, headers={"x-api-key": key}, compression=Compression.Gzip, timeout=30
        )
    else:
        from grpc import Compression
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        # An https:// endpoint is TLS, trusting OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE.
        exporter = OTLPLogExporter(
            endpoint=endpoint,
            insecure=not endpoint.startswith("https://"),
            headers={"authorization": f"Bearer {key}"},
            compression=Compression.Gzip,
            timeout=30,
        )

    results = []

    class Recording:
        """The exporter, recording what each export returned."""

        def export(self, batch):
            result = exporter.export(batch)
            results.append(result.name)
            return result

        def force_flush(self, timeout_millis=30_000):
            return exporter.force_flush(timeout_millis)

        def shutdown(self):
            exporter.shutdown()

    provider = LoggerProvider(
        resource=Resource.create(
            {"service.name": "checkout", "host.name": "web-7", "process.pid": 4242, "run": run}
        )
    )
    provider.add_log_record_processor(SimpleLogRecordProcessor(Recording()))
    logger = provider.get_logger("securenet.test", "1.2.3")
    levels = [
        (SeverityNumber.INFO, "INFO"),
        (SeverityNumber.WARN, "WARN"),
        (SeverityNumber.ERROR, "ERROR"),
        (SeverityNumber.DEBUG, "DEBUG"),
    ]
    for i in range(count):
        number, text = levels[i % len(levels)]
        # Every fourth body is a map: OTLP bodies are any value.
        body = {"event": "payment", "n": i} if i % 4 == 3 else f"{kind} record {i} of {run}"
        logger.emit(
            timestamp=1_795_687_200_000_000_000 + i * 1_000_000,
            severity_number=number,
            severity_text=text,
            body=body,
            attributes={"client.address": "203.0.113.7", "attempt": i, "ok": i % 2 == 0},
            event_name="checkout.step",
        )
    provider.shutdown()
    return results


def loki_protobuf(url, key, run, count):
    """Builds Loki's push.proto messages (package logproto) from its
    definition, compresses them with snappy and POSTs them as Promtail does."""
    import requests
    import snappy
    from google.protobuf import descriptor_pb2, descriptor_pool, timestamp_pb2
    from google.protobuf.message_factory import GetMessageClass

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="pkg/push/push.proto",
        package="logproto",
        dependency=["google/protobuf/timestamp.proto"],
        syntax="proto3",
    )

    def message(name, fields):
        m = proto.message_type.add(name=name)
        for number, (field, kind, label, type_name) in enumerate(fields, start=1):
            f = m.field.add(name=field, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name

    one, many = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("PushRequest", [("streams", F.TYPE_MESSAGE, many, ".logproto.StreamAdapter")])
    message(
        "StreamAdapter",
        [
            ("labels", F.TYPE_STRING, one, None),
            ("entries", F.TYPE_MESSAGE, many, ".logproto.EntryAdapter"),
            ("hash", F.TYPE_UINT64, one, None),
        ],
    )
    message(
        "EntryAdapter",
        [
            ("timestamp", F.TYPE_MESSAGE, one, ".google.protobuf.Timestamp"),
            ("line", F.TYPE_STRING, one, None),
            ("structuredMetadata", F.TYPE_MESSAGE, many, ".logproto.LabelPairAdapter"),
        ],
    )
    message("LabelPairAdapter", [("name", F.TYPE_STRING, one, None), ("value", F.TYPE_STRING, one, None)])
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    Push = GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))

    statuses = []
    for i in range(count):
        push = Push()
        stream = push.streams.add(labels=f'{{job="varlogs", host="loki-{i % 2}", level="warn", run="{run}"}}')
        entry = stream.entries.add(line=f'level=warn msg="disk \\"sda\\" {i}" run={run}')
        entry.timestamp.seconds = 1_795_687_200 + i
        entry.timestamp.nanos = 250_000_000
        entry.structuredMetadata.add(name="trace_id", value=f"t-{i}")
        response = requests.post(
            url,
            data=snappy.compress(push.SerializeToString()),
            headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"},
            timeout=30,
        )
        statuses.append(response.status_code)
    return statuses


def gelf(kind, target, key, run, count):
    """pygelf's handlers under Python's logging, as applications use them.
    The key travels as the additional field _securenet_key (pygelf cannot
    set headers; an empty key sends none); every other message is large and random, so that over UDP
    it is compressed and still split into chunks."""
    import os

    from pygelf import GelfHttpHandler, GelfTcpHandler, GelfTlsHandler, GelfUdpHandler

    host, port = target.rsplit(":", 1)
    fields = {"_app": "billing", "_run": run}
    if key:
        fields["_securenet_key"] = key
    if kind == "gelf-tls":
        # Trusts GELF_TLS_CA; presents GELF_TLS_CERT/GELF_TLS_KEY when set
        # (a client certificate whose subject names the tenant).
        handler = GelfTlsHandler(
            host=host,
            port=int(port),
            validate=True,
            ca_certs=os.environ["GELF_TLS_CA"],
            certfile=os.environ.get("GELF_TLS_CERT"),
            keyfile=os.environ.get("GELF_TLS_KEY"),
            **fields,
        )
    elif kind == "gelf-udp":
        handler = GelfUdpHandler(host=host, port=int(port), compress=True, chunk_size=1300, **fields)
    elif kind == "gelf-tcp":
        handler = GelfTcpHandler(host=host, port=int(port), **fields)
    else:
        handler = GelfHttpHandler(host=host, port=int(port), compress=True, **fields)
    logger = logging.getLogger(f"securenet.{kind}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    sizes = []
    for i in range(count):
        text = f"{kind} message {i} of {run}"
        if i % 2 == 1:
            text += " " + os.urandom(3000).hex()
        sizes.append(len(text))
        (logger.error if i % 3 == 0 else logger.info)(text)
    handler.close()
    return sizes


def fluent(target, key, run, count):
    """fluent-logger's FluentSender (Message mode, nanosecond EventTime), as
    Python applications log to Fluentd/Fluent Bit. It cannot ask for acks:
    each emit returns whether the bytes were written."""
    from fluent import sender

    host, port = target.rsplit(":", 1)
    logger = sender.FluentSender("py", host=host, port=int(port), nanosecond_precision=True, timeout=10)
    results = []
    for i in range(count):
        ok = logger.emit_with_time(
            "checkout",
            sender.EventTime(1_795_687_300 + i, 500_000_000),
            {"message": f"fluent-logger event {i} of {run}", "host": "py-1", "securenet_key": key, "run": run},
        )
        results.append(ok or str(logger.last_error))
    logger.close()
    return results


def grpc_raw(endpoint, key, case):
    """One Export of a message no SDK would send (CASE: garbage, not-utf8,
    deep, mixed), through grpcio's generic stub: bytes in, bytes out. The
    result is the status code name, its details, and for OK the answer's
    partial success."""
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as service
    from opentelemetry.proto.common.v1 import common_pb2 as common
    from opentelemetry.proto.logs.v1 import logs_pb2 as logs

    def nest(tag, inner):
        return bytes([tag, len(inner)]) + inner

    def varint(n):
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)

    def delimited(tag, inner):
        return bytes([tag]) + varint(len(inner)) + inner

    if case == "garbage":
        message = b"\xff\xff\xff"
    elif case == "not-utf8":
        # resource_logs { scope_logs { log_records { severity_text: C3 28 } } }
        message = nest(0x0A, nest(0x12, nest(0x12, bytes([0x1A, 0x02, 0xC3, 0x28]))))
    elif case == "deep":
        # A body of arrays nested 200 deep.
        value = bytes([0x10, 0x01])
        for _ in range(200):
            value = delimited(0x2A, delimited(0x0A, value))
        message = delimited(0x0A, delimited(0x12, delimited(0x12, delimited(0x2A, value))))
    elif case == "mixed":
        def record(body, tenant=None):
            attributes = []
            if tenant:
                attributes.append(
                    common.KeyValue(key="tenant_id", value=common.AnyValue(string_value=tenant))
                )
            return logs.LogRecord(body=common.AnyValue(string_value=body), attributes=attributes)

        request = service.ExportLogsServiceRequest(
            resource_logs=[
                logs.ResourceLogs(
                    scope_logs=[
                        logs.ScopeLogs(
                            log_records=[record("grpc-raw kept"), record("grpc-raw theirs", "globex")]
                        )
                    ]
                )
            ]
        )
        message = request.SerializeToString()
    else:
        raise SystemExit(f"unknown grpc-raw case {case}")
    channel = grpc.insecure_channel(endpoint.removeprefix("http://"))
    export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
    try:
        answer = export(message, metadata=[("x-api-key", key)], timeout=30)
    except grpc.RpcError as e:
        return [{"code": e.code().name, "details": e.details()}]
    response = service.ExportLogsServiceResponse.FromString(answer)
    return [
        {
            "code": "OK",
            "rejected": response.partial_success.rejected_log_records,
            "error_message": response.partial_success.error_message,
        }
    ]


def main():
    kind, target, key, run, count = sys.argv[1:6]
    warnings = Warnings()
    logging.getLogger().addHandler(warnings)
    started = time.monotonic()
    if kind.startswith("otlp-"):
        results = otlp(kind, target, key, run, int(count))
    elif kind == "loki-protobuf":
        results = loki_protobuf(target, key, run, int(count))
    elif kind == "fluent":
        results = fluent(target, key, run, int(count))
    elif kind == "grpc-raw":
        results = grpc_raw(target, key, run)
    elif kind.startswith("gelf-"):
        results = gelf(kind, target, key, run, int(count))
    else:
        raise SystemExit(f"unknown client {kind}")
    print(
        json.dumps(
            {"results": results, "warnings": warnings.messages, "seconds": time.monotonic() - started}
        )
    )


if __name__ == "__main__":
    main()

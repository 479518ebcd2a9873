//! OTLP/gRPC: `opentelemetry.proto.collector.logs.v1.LogsService/Export` on
//! `ingest.otlp.grpc_listen`.
//!
//! The credential comes from the request metadata (`authorization: Bearer
//! <key>` or `x-api-key: <key>`, as the OTel SDKs' `headers` setting sends
//! them). Answers: `partial_success` naming refused records (the rest are
//! stored, as on HTTP), or an error status ([`status`]).

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::http::{IngestState, authenticate, classify, retry_after_secs};

/// The LogsService of one ingest process.
pub struct OtlpLogs {
    state: IngestState,
}

#[tonic::async_trait]
impl LogsService for OtlpLogs {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.export_logs(request).await.map_err(status)
    }
}

impl OtlpLogs {
    async fn export_logs(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Error> {
        let state = &self.state;
        let headers = request.metadata().clone().into_headers();
        let principal = authenticate(&state.store, &headers).await?;
        state
            .limits
            .check(&principal.tenant)
            .map_err(Error::RateLimited)?;
        let tenant = principal.tenant.clone();
        let max_record = state.config.max_record_bytes;
        let now = schemas::time::now_ms();
        let (mapped, reservation) = state
            .build(request.into_inner(), move |request, charge| {
                super::map_request(request, &tenant, now, max_record, charge)
            })
            .await?;
        let response = mapped.response();
        let rejected = mapped.rejected.len();
        if !mapped.records.is_empty() || rejected > 0 {
            state
                .store_records(
                    principal.tenant,
                    "otlp_grpc",
                    mapped.records,
                    rejected,
                    reservation,
                )
                .await?;
        }
        Ok(Response::new(response))
    }
}

/// `google.rpc.RetryInfo`, in the `google.rpc.retryinfo-bin` trailer: how
/// long the client should wait before it retries (the SDKs honour it).
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The gRPC status of an ingest error: the OTLP specification's codes —
/// `RESOURCE_EXHAUSTED` for the organization's rate limit and
/// `UNAVAILABLE` for backpressure or a bus that cannot take records now,
/// both with `RetryInfo`; refusals that a retry cannot fix are
/// `INVALID_ARGUMENT`, `UNAUTHENTICATED` or `PERMISSION_DENIED`.
fn status(err: Error) -> Status {
    let (http, _, message) = classify(&err);
    let mut status = Status::new(super::grpc_code(http), message);
    if let Some(secs) = retry_after_secs(&err) {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: secs as i64,
                nanos: 0,
            }),
        };
        status.metadata_mut().insert_bin(
            "google.rpc.retryinfo-bin",
            MetadataValue::from_bytes(&prost::Message::encode_to_vec(&info)),
        );
    }
    status
}

/// Serves OTLP/gRPC on `listener` (over TLS with `tls`: the HTTP
/// listener's certificate) until `shutdown` resolves. Requests may be
/// gzip-compressed (the SDKs' `compression=gzip`); a message may be as
/// large as an HTTP ingest body (`ingest.http.max_body_bytes`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: IngestState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let limit = state.config.max_body_bytes;
    let service = LogsServiceServer::new(OtlpLogs { state })
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    // HTTP/2's 64 KiB default windows make a 1 MB export wait for a window
    // update every 64 KiB (measured: 9.2 µs of server CPU per record against
    // 5.7 over HTTP/1.1); exports are large, so the windows are too.
    tonic::transport::Server::builder()
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        .add_service(service)
        .serve_with_incoming_shutdown(crate::tls::grpc_incoming(listener, tls), shutdown)
        .await
}

//! OTLP/gRPC: `opentelemetry.proto.collector.logs.v1.LogsService/Export` on
//! `ingest.otlp.grpc_listen`.
//!
//! The credential comes from the request metadata (`authorization: Bearer
//! <key>` or `x-api-key: <key>`, as the OTel SDKs' `headers` setting sends
//! them). Answers: `partial_success` naming refused records (the rest are
//! stored, as on HTTP), or an error status ([`status`]).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Buf as _, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message as _;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::metadata::MetadataValue;
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::http::{IngestState, authenticate, classify, retry_after_secs};

const SERVICE: &str = "opentelemetry.proto.collector.logs.v1.LogsService";
const EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The LogsService of one ingest process, in place of the generated
/// `LogsServiceServer`: that one decodes each request into owned
/// `String`s with prost before the handler runs; this one receives the
/// message's bytes and decodes them as borrowed views ([`super::view`]),
/// off the async runtime with the mapping.
#[derive(Clone)]
struct LogsServer {
    state: Arc<IngestState>,
    max_message: usize,
}

impl NamedService for LogsServer {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for LogsServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let server = self.clone();
        Box::pin(async move {
            if request.uri().path() != EXPORT {
                return Ok(Status::unimplemented(format!(
                    "{} is not a method of {SERVICE}",
                    request.uri().path()
                ))
                .into_http());
            }
            let mut grpc = tonic::server::Grpc::new(RawRequest)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(server.max_message);
            Ok(grpc.unary(Export(server.state), request).await)
        })
    }
}

/// `Export` itself.
struct Export(Arc<IngestState>);

impl UnaryService<Bytes> for Export {
    type Response = ExportLogsServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move { export(&state, request).await.map_err(status) })
    }
}

async fn export(
    state: &IngestState,
    request: Request<Bytes>,
) -> Result<Response<ExportLogsServiceResponse>, Error> {
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
        .build(request.into_inner(), move |message, charge| {
            let request = super::decode(&message, false)?;
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

/// A codec that hands the handler the request message's bytes (split off
/// tonic's receive buffer, not copied) and encodes the answer with prost.
#[derive(Clone, Copy)]
struct RawRequest;

impl Codec for RawRequest {
    type Encode = ExportLogsServiceResponse;
    type Decode = Bytes;
    type Encoder = RawRequest;
    type Decoder = RawRequest;

    fn encoder(&mut self) -> Self::Encoder {
        RawRequest
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawRequest
    }
}

impl Encoder for RawRequest {
    type Item = ExportLogsServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the answer: {e}")))
    }
}

impl Decoder for RawRequest {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
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
    open: Arc<crate::conn_caps::OpenConnections>,
    state: IngestState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let service = LogsServer {
        max_message: state.config.max_body_bytes,
        state: Arc::new(state),
    };
    // HTTP/2's 64 KiB default windows make a 1 MB export wait for a window
    // update every 64 KiB (measured: 9.2 µs of server CPU per record against
    // 5.7 over HTTP/1.1); exports are large, so the windows are too.
    crate::tls::grpc_server()
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        .add_service(service)
        .serve_with_incoming_shutdown(crate::tls::grpc_incoming(listener, tls, open), shutdown)
        .await
}

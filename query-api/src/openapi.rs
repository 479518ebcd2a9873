//! `GET /api/openapi.json`: the OpenAPI 3.1 document, built from the route
//! table ([`crate::routes::table`]) and the ingest receivers' own table
//! (handed in by the binary as [`schemas::api::RouteDoc`]s), so it lists
//! exactly the routes SecureNet has, with their access (security),
//! parameters, request bodies and statuses. Success bodies are described
//! as JSON objects (or their media types); the query API's errors share
//! one schema, `{"error", "code"}`; the emulated protocols (Splunk HEC,
//! Elasticsearch, Loki) answer errors in their own shape. `GET /api/docs`
//! serves Swagger UI over it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, Parameter, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{
    AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr,
    Required, ResponseBuilder, ResponsesBuilder, Schema,
};

use schemas::api::RouteDoc;

use crate::routes::{Access, table};

/// Error statuses any route may answer (the one error mapping in
/// [`crate::error`]); 5xx are not promised.
const ERRORS: &[(u16, &str)] = &[
    (400, "malformed request"),
    (401, "missing or bad credentials"),
    (402, "plan limit, or a feature the plan does not include"),
    (403, "role or organization not allowed"),
    (404, "not found (or another organization's)"),
    (409, "conflict"),
    (413, "body too large"),
    (415, "unsupported media type"),
    (422, "query over its time or memory limit"),
    (429, "rate limited"),
    (503, "not configured or a dependency is unavailable"),
];

fn any_object() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Object))
            .build(),
    )
}

fn string() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .build(),
    )
}

/// A query parameter's schema: its type, with the constraints the
/// handlers enforce for the shared ones.
/// An optional query parameter of a listing: `t` is its JSON type
/// (`string`, `integer`, `boolean`); `limit`, `since`, `until` and `month`
/// get their constraints.
pub(crate) fn query_param(name: &str, t: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .schema(Some(param_schema(name, t)))
        .build()
}

fn param_schema(name: &str, t: &str) -> Schema {
    let object = match t {
        "integer" => ObjectBuilder::new().schema_type(SchemaType::Type(Type::Integer)),
        "boolean" => ObjectBuilder::new().schema_type(SchemaType::Type(Type::Boolean)),
        _ => ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)),
    };
    let object = match name {
        "limit" => object.minimum(Some(1)).maximum(Some(500)),
        "since" | "until" => object.format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        "month" => object.pattern(Some(r"^[0-9]{4}-(0[1-9]|1[0-2])$")),
        _ => object,
    };
    Schema::Object(object.build())
}

fn error_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Object))
            .property("error", string())
            .property("code", string())
            .required("error")
            .required("code")
            .build(),
    )
}

fn http_method(m: &Method) -> HttpMethod {
    match *m {
        Method::POST => HttpMethod::Post,
        Method::DELETE => HttpMethod::Delete,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::HEAD => HttpMethod::Head,
        _ => HttpMethod::Get,
    }
}

fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_ascii_lowercase();
    for part in path.trim_start_matches("/api/").split(['/', '-', '.']) {
        let part = part.trim_matches(['{', '}']);
        if !part.is_empty() {
            id.push('_');
            id.push_str(part);
        }
    }
    id
}

fn success_content(media: &[&str]) -> Vec<(String, utoipa::openapi::Content)> {
    media
        .iter()
        .map(|m| {
            let schema = if *m == "application/json" {
                any_object()
            } else {
                string()
            };
            (
                m.to_string(),
                ContentBuilder::new().schema(Some(schema)).build(),
            )
        })
        .collect()
}

fn error_response(what: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(what)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(Ref::from_schema_name("Error"))))
                .build(),
        )
        .build()
}

/// `{"accepted", "rejected", "errors"}`: what an ingest request stored.
fn ingest_answer_schema() -> Schema {
    let integer = || {
        Schema::Object(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::Integer))
                .build(),
        )
    };
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Object))
            .property("accepted", integer())
            .property("rejected", integer())
            .property(
                "errors",
                Schema::Array(
                    utoipa::openapi::schema::ArrayBuilder::new()
                        .items(RefOr::T(any_object()))
                        .build(),
                ),
            )
            .required("accepted")
            .required("rejected")
            .build(),
    )
}

/// What an error status means on the ingest routes.
fn ingest_error(status: u16) -> &'static str {
    match status {
        400 => "malformed body (valid records of it are stored)",
        401 => "missing or bad credentials",
        402 => "plan limit",
        403 => "a viewer credential (ingesting needs member)",
        409 => "a scan id reused for another report",
        413 => "body or a record over its limit",
        415 => "unsupported content type or encoding",
        429 => "rate limited (Retry-After)",
        _ => "saturated or a dependency unavailable (Retry-After)",
    }
}

/// One ingest receiver's operation.
fn ingest_operation(r: &RouteDoc) -> utoipa::openapi::path::Operation {
    use schemas::api::ErrorShape;
    let content = |media: &str| {
        let schema = if media.ends_with("json") {
            any_object()
        } else {
            string()
        };
        ContentBuilder::new().schema(Some(schema)).build()
    };
    let mut ok = ResponseBuilder::new().description("success");
    if r.success != 204 {
        ok = ok.content(r.produces, content(r.produces));
    }
    if r.error_shape == ErrorShape::Otlp {
        ok = ok.content("application/json", content("application/json"));
    }
    let mut responses = ResponsesBuilder::new().response(r.success.to_string(), ok.build());
    for status in r.errors {
        let response = match r.error_shape {
            // A body none of whose records was valid: the usual answer,
            // listing each record's error, with status 400.
            ErrorShape::SecureNet if *status == 400 => ResponseBuilder::new()
                .description("malformed body, or no record of it valid (the answer lists why)")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Schema::AnyOf(
                            AnyOfBuilder::new()
                                .item(RefOr::Ref(Ref::from_schema_name("Error")))
                                .item(ingest_answer_schema())
                                .build(),
                        )))
                        .build(),
                )
                .build(),
            ErrorShape::SecureNet => error_response(ingest_error(*status)),
            ErrorShape::Protocol => ResponseBuilder::new()
                .description(ingest_error(*status))
                .content("application/json", content("application/json"))
                .build(),
            ErrorShape::Text => ResponseBuilder::new()
                .description(ingest_error(*status))
                .content("text/plain", content("text/plain"))
                .build(),
            ErrorShape::Otlp => ResponseBuilder::new()
                .description(ingest_error(*status))
                .content("application/x-protobuf", content("application/x-protobuf"))
                .content("application/json", content("application/json"))
                .build(),
        };
        responses = responses.response(status.to_string(), response);
    }
    let mut op = OperationBuilder::new()
        .operation_id(Some(operation_id(&ingest_method(r.method), r.path)))
        .summary(Some(r.summary))
        .tag(r.tag)
        .responses(responses.build());
    op = match r.role {
        None => op.securities(Some(Vec::<SecurityRequirement>::new())),
        Some(role) => op
            .securities(Some([
                SecurityRequirement::new("bearer", Vec::<String>::new()),
                SecurityRequirement::new("apiKey", Vec::<String>::new()),
            ]))
            .description(Some(format!(
                "Served by processes running the ingest role. Needs the {role} role (or higher)."
            ))),
    };
    for name in path_params(r.path) {
        op = op.parameter(path_param(name));
    }
    if !r.consumes.is_empty() {
        let mut body = RequestBodyBuilder::new().required(Some(Required::True));
        for media in r.consumes {
            body = body.content(*media, content(media));
        }
        op = op.request_body(Some(body.build()));
    }
    op.build()
}

fn ingest_method(m: schemas::api::Method) -> Method {
    match m {
        schemas::api::Method::Get => Method::GET,
        schemas::api::Method::Head => Method::HEAD,
        schemas::api::Method::Post => Method::POST,
    }
}

/// The document: the query API's routes and `ingest`'s.
pub fn build(ingest: &[RouteDoc]) -> OpenApi {
    let mut items: BTreeMap<String, PathItem> = BTreeMap::new();
    let mut add = |path: &str, method: HttpMethod, op: utoipa::openapi::path::Operation| {
        let item = PathItem::new(method, op);
        match items.get_mut(path) {
            Some(existing) => existing.merge_operations(item),
            None => {
                items.insert(path.to_string(), item);
            }
        }
    };
    let bearer = || SecurityRequirement::new("bearer", Vec::<String>::new());
    let api_key = || SecurityRequirement::new("apiKey", Vec::<String>::new());
    for e in table() {
        let mut responses = ResponsesBuilder::new();
        let mut ok = ResponseBuilder::new().description("success");
        if e.success != 204 {
            for (media, content) in success_content(e.produces) {
                ok = ok.content(media, content);
            }
        }
        responses = responses.response(e.success.to_string(), ok.build());
        for (code, what) in ERRORS {
            responses = responses.response(code.to_string(), error_response(what));
        }
        let mut op = OperationBuilder::new()
            .operation_id(Some(operation_id(&e.method, e.path)))
            .summary(Some(e.summary))
            .tag(
                e.path
                    .trim_start_matches("/api/")
                    .split('/')
                    .next()
                    .unwrap_or("api"),
            )
            .responses(responses.build());
        op = match e.access {
            Access::Public => op.securities(Some(Vec::<SecurityRequirement>::new())),
            Access::Platform => op.securities(Some([bearer()])),
            Access::Role(role) => op
                .securities(Some([bearer(), api_key()]))
                .description(Some(format!("Needs the {role} role (or higher)."))),
        };
        for name in path_params(e.path) {
            op = op.parameter(path_param(name));
        }
        for parameter in (e.query)() {
            op = op.parameter(parameter);
        }
        if let Some(schema) = e.body {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(schema())).build(),
                    )
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        add(e.path, http_method(&e.method), op.build());
    }
    for r in ingest {
        add(
            r.path,
            http_method(&ingest_method(r.method)),
            ingest_operation(r),
        );
    }
    // The operational routes every role serves, unauthenticated.
    for (path, summary, media, statuses) in [
        (
            "/api/metrics/health",
            "readiness: bus, sinks, metadata store (503 when not ready)",
            "application/json",
            &[200u16, 503][..],
        ),
        (
            "/api/metrics/prometheus",
            "Prometheus text exposition",
            "text/plain",
            &[200][..],
        ),
        (
            "/metrics",
            "Prometheus text exposition",
            "text/plain",
            &[200][..],
        ),
        (
            "/api/openapi.json",
            "this document",
            "application/json",
            &[200][..],
        ),
    ] {
        let mut responses = ResponsesBuilder::new();
        for s in statuses {
            let schema = if media == "application/json" {
                any_object()
            } else {
                string()
            };
            responses = responses.response(
                s.to_string(),
                ResponseBuilder::new()
                    .description(summary)
                    .content(media, ContentBuilder::new().schema(Some(schema)).build())
                    .build(),
            );
        }
        add(
            path,
            HttpMethod::Get,
            OperationBuilder::new()
                .operation_id(Some(operation_id(&Method::GET, path)))
                .summary(Some(summary))
                .tag("operations")
                .securities(Some(Vec::<SecurityRequirement>::new()))
                .responses(responses.build())
                .build(),
        );
    }
    let mut paths = Paths::new();
    paths.paths = items.into_iter().collect();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("SecureNet API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Multi-tenant security telemetry: organizations, billing, metrics, insights and SQL. \
                     Credentials: `Authorization: Bearer <API key or JWT>` or `X-API-Key`.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(
            ComponentsBuilder::new()
                .schema("Error", error_schema())
                .security_scheme(
                    "bearer",
                    SecurityScheme::Http(
                        HttpBuilder::new()
                            .scheme(HttpAuthScheme::Bearer)
                            .description(Some("an API key (sn_…) or a JWT from POST /api/auth/token"))
                            .build(),
                    ),
                )
                .security_scheme("apiKey", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))))
                .build(),
        ))
        .build()
}

/// `GET /api/openapi.json`
pub async fn handler(State(doc): State<Arc<OpenApi>>) -> Json<Arc<OpenApi>> {
    Json(doc)
}

/// Swagger UI at `/api/docs` (its assets are compiled in: it works without
/// network access), reading `/api/openapi.json`.
pub fn swagger_ui() -> axum::Router {
    let ui: axum::Router = utoipa_swagger_ui::SwaggerUi::new("/api/docs")
        .config(utoipa_swagger_ui::Config::from("/api/openapi.json"))
        .into();
    // Swagger UI draws its icons from data: URIs and sets inline styles;
    // everything else stays same-origin.
    ui.layer(axum::middleware::map_response(
        |mut response: axum::response::Response| async move {
            response.headers_mut().insert(
                axum::http::header::CONTENT_SECURITY_POLICY,
                axum::http::HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
                ),
            );
            response
        },
    ))
}

/// The `{name}` parameters of a route path, in order.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
}

fn path_param(name: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(string()))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_security() {
        let doc = serde_json::to_value(build(&[])).unwrap();
        for e in table() {
            let method = e.method.as_str().to_ascii_lowercase();
            let op = &doc["paths"][e.path][&method];
            assert!(op.is_object(), "{} {} is missing", e.method, e.path);
            assert!(
                op["responses"][e.success.to_string()].is_object(),
                "{} {}",
                e.method,
                e.path
            );
            let security = op["security"].as_array().unwrap();
            assert_eq!(
                security.is_empty(),
                e.access == Access::Public,
                "{} {}",
                e.method,
                e.path
            );
            assert_eq!(
                op["requestBody"].is_object(),
                e.body.is_some(),
                "{} {}",
                e.method,
                e.path
            );
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(
            documented,
            table().len() + 4,
            "no route is documented that the server lacks"
        );
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["components"]["schemas"]["Error"].is_object());
        // The request bodies carry their fields.
        let token = &doc["paths"]["/api/auth/token"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert!(token["properties"]["email"].is_object(), "{token}");
    }

    #[test]
    fn ingest_routes_are_documented_in_their_own_shape() {
        use schemas::api::{ErrorShape, Method};
        let route = |path, error_shape, role| RouteDoc {
            method: Method::Post,
            path,
            summary: "s",
            tag: "ingest",
            role,
            consumes: &["application/x-ndjson"],
            success: 200,
            produces: "application/json",
            errors: &[400, 413],
            error_shape,
        };
        let doc = serde_json::to_value(build(&[
            route("/api/ingest/logs", ErrorShape::SecureNet, Some("member")),
            route("/loki/api/v1/push", ErrorShape::Text, Some("member")),
            RouteDoc {
                method: Method::Head,
                ..route("/api/ingest", ErrorShape::Protocol, None)
            },
        ]))
        .unwrap();
        let logs = &doc["paths"]["/api/ingest/logs"]["post"];
        assert_eq!(
            logs["responses"]["413"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        assert!(
            logs["responses"]["400"]["content"]["application/json"]["schema"]["anyOf"].is_array()
        );
        assert!(logs["requestBody"]["content"]["application/x-ndjson"].is_object());
        assert_eq!(logs["security"].as_array().unwrap().len(), 2);
        let loki = &doc["paths"]["/loki/api/v1/push"]["post"];
        assert!(loki["responses"]["413"]["content"]["text/plain"].is_object());
        let head = &doc["paths"]["/api/ingest"]["head"];
        assert!(head["security"].as_array().unwrap().is_empty(), "{head}");
    }
}

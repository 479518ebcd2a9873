//! OTLP logs requests as views: strings and bytes borrowed from the request
//! body instead of copied into owned `String`s, decoded from protobuf
//! ([`Request::decode`]) or OTLP/JSON ([`Request::from_json`]) into the same
//! types, so that [`super::map_request`] maps both forms with one code path.
//!
//! Why not the generated types: prost decodes every attribute key and value
//! into its own `String` (measured under OTLP/gRPC: glibc malloc/free ~25 %
//! of the process, for strings that are only copied once more into the
//! record), and opentelemetry-proto's serde form reads every `AnyValue`
//! through serde's `flatten`, which buffers each value before reading it.
//! prost has no borrowed decoding, so the protobuf form is read here with
//! prost's own wire primitives (keys, varints, skipping unknown fields).
//!
//! Conformance kept from the generated decoders: invalid UTF-8 in a string
//! field, a truncated message or a field of the wrong wire type refuse the
//! request; unknown fields are skipped; a repeated singular field's last
//! value wins; nesting deeper than prost's limit (100) is refused. OTLP/JSON
//! follows the protobuf JSON mapping: lowerCamelCase names (the proto names
//! are accepted too), 64-bit integers as strings or numbers, enums as
//! numbers or names, `traceId`/`spanId` in hex, `bytesValue` in base64.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use prost::encoding::{
    DecodeContext, WireType, check_wire_type, decode_key, decode_varint, encoded_len_varint,
    skip_field,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// `ExportLogsServiceRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Request<'a> {
    #[serde(borrow, alias = "resource_logs")]
    pub resource_logs: Vec<ResourceLogs<'a>>,
}

/// `ResourceLogs`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceLogs<'a> {
    #[serde(borrow)]
    pub resource: Option<Resource<'a>>,
    #[serde(borrow, alias = "scope_logs")]
    pub scope_logs: Vec<ScopeLogs<'a>>,
}

/// `Resource` (its attributes: nothing else of it is mapped).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Resource<'a> {
    #[serde(borrow)]
    pub attributes: Vec<KeyValue<'a>>,
}

/// `ScopeLogs`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ScopeLogs<'a> {
    #[serde(borrow)]
    pub scope: Option<Scope<'a>>,
    #[serde(borrow, alias = "log_records")]
    pub log_records: Vec<Log<'a>>,
}

/// `InstrumentationScope`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Scope<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    #[serde(borrow)]
    pub attributes: Vec<KeyValue<'a>>,
}

/// `LogRecord`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Log<'a> {
    #[serde(deserialize_with = "uint", alias = "time_unix_nano")]
    pub time_unix_nano: u64,
    #[serde(deserialize_with = "uint", alias = "observed_time_unix_nano")]
    pub observed_time_unix_nano: u64,
    #[serde(deserialize_with = "severity", alias = "severity_number")]
    pub severity_number: i32,
    #[serde(borrow, alias = "severity_text")]
    pub severity_text: Cow<'a, str>,
    #[serde(deserialize_with = "any_value")]
    pub body: Option<Value<'a>>,
    #[serde(borrow)]
    pub attributes: Vec<KeyValue<'a>>,
    #[serde(deserialize_with = "uint32")]
    pub flags: u32,
    #[serde(deserialize_with = "hex_bytes", alias = "trace_id")]
    pub trace_id: Cow<'a, [u8]>,
    #[serde(deserialize_with = "hex_bytes", alias = "span_id")]
    pub span_id: Cow<'a, [u8]>,
    #[serde(borrow, alias = "event_name")]
    pub event_name: Cow<'a, str>,
    /// The record's size in protobuf: as received, or for OTLP/JSON as it
    /// would be encoded (what the `bytes` column meters either way).
    #[serde(skip)]
    pub size: usize,
}

/// `KeyValue`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeyValue<'a> {
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    /// `None`: no value, or an `AnyValue` with none of its fields set.
    #[serde(deserialize_with = "any_value")]
    pub value: Option<Value<'a>>,
}

/// The `value` of an `AnyValue`.
#[derive(Debug)]
pub enum Value<'a> {
    String(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// `ArrayValue.values`; `None` for an empty `AnyValue`.
    Array(Vec<Option<Value<'a>>>),
    /// `KeyValueList.values`.
    Kvlist(Vec<KeyValue<'a>>),
    Bytes(Cow<'a, [u8]>),
    /// Only meaningful for profiles (a string-table index).
    Strindex(i32),
}

// ---- protobuf ----

/// Why a protobuf request could not be read.
#[derive(Debug)]
pub struct DecodeError(String);

impl DecodeError {
    fn new(why: &str) -> Self {
        DecodeError(why.to_string())
    }
}

impl From<prost::DecodeError> for DecodeError {
    fn from(e: prost::DecodeError) -> Self {
        DecodeError(e.to_string())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// prost's nesting limit (`prost::RECURSION_LIMIT`), for `AnyValue`s
/// inside arrays and maps, so that a hostile request cannot overflow the
/// stack.
const RECURSION_LIMIT: u32 = 100;

impl<'a> Request<'a> {
    /// Decodes a protobuf `ExportLogsServiceRequest`.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut request = Request::default();
        fields(buf, |tag, wire, buf| {
            match tag {
                1 => request
                    .resource_logs
                    .push(ResourceLogs::decode(delimited(wire, buf)?)?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(request)
    }

    /// Decodes an OTLP/JSON `ExportLogsServiceRequest`.
    pub fn from_json(buf: &'a [u8]) -> Result<Self, JsonError> {
        // The body checked as UTF-8 once, in one pass, instead of string by
        // string as serde_json's byte reader does (3.3 % of the server's
        // CPU under OTLP/JSON in a profile); a JSON text must be UTF-8.
        let text = std::str::from_utf8(buf).map_err(JsonError::Utf8)?;
        let mut request: Request<'a> = serde_json::from_str(text).map_err(JsonError::Json)?;
        for log in request
            .resource_logs
            .iter_mut()
            .flat_map(|r| r.scope_logs.iter_mut())
            .flat_map(|s| s.log_records.iter_mut())
        {
            log.size = log.encoded_len();
        }
        Ok(request)
    }
}

impl<'a> ResourceLogs<'a> {
    fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut out = ResourceLogs::default();
        fields(buf, |tag, wire, buf| {
            match tag {
                1 => {
                    let resource = out.resource.get_or_insert_with(Resource::default);
                    repeated_1(delimited(wire, buf)?, |item| {
                        resource.attributes.push(KeyValue::decode(item, 0)?);
                        Ok(())
                    })?;
                }
                2 => out
                    .scope_logs
                    .push(ScopeLogs::decode(delimited(wire, buf)?)?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(out)
    }
}

impl<'a> ScopeLogs<'a> {
    fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut out = ScopeLogs::default();
        fields(buf, |tag, wire, buf| {
            match tag {
                1 => {
                    let scope = out.scope.get_or_insert_with(Scope::default);
                    fields(delimited(wire, buf)?, |tag, wire, buf| {
                        match tag {
                            1 => scope.name = string(wire, buf)?,
                            2 => scope.version = string(wire, buf)?,
                            3 => scope
                                .attributes
                                .push(KeyValue::decode(delimited(wire, buf)?, 0)?),
                            _ => return Ok(false),
                        }
                        Ok(true)
                    })?;
                }
                2 => out.log_records.push(Log::decode(delimited(wire, buf)?)?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(out)
    }
}

impl<'a> Log<'a> {
    fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut log = Log {
            size: buf.len(),
            ..Log::default()
        };
        fields(buf, |tag, wire, buf| {
            match tag {
                1 => log.time_unix_nano = fixed64(wire, buf)?,
                11 => log.observed_time_unix_nano = fixed64(wire, buf)?,
                // int32 on the wire is a sign-extended varint: truncating
                // is how protobuf reads it.
                2 => log.severity_number = varint(wire, buf)? as i32,
                3 => log.severity_text = string(wire, buf)?,
                5 => log.body = any_value_decode(delimited(wire, buf)?, 0)?,
                6 => log
                    .attributes
                    .push(KeyValue::decode(delimited(wire, buf)?, 0)?),
                8 => log.flags = fixed32(wire, buf)?,
                9 => log.trace_id = Cow::Borrowed(delimited(wire, buf)?),
                10 => log.span_id = Cow::Borrowed(delimited(wire, buf)?),
                12 => log.event_name = string(wire, buf)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(log)
    }

    /// The record's protobuf size (what prost's `encoded_len` says of the
    /// same record).
    fn encoded_len(&self) -> usize {
        let mut len = 0;
        // Fields 1–15 take one key byte.
        for (set, field) in [
            (self.time_unix_nano != 0, 9),
            (self.observed_time_unix_nano != 0, 9),
            (self.flags != 0, 5),
        ] {
            if set {
                len += field;
            }
        }
        if self.severity_number != 0 {
            len += 1 + encoded_len_varint(i64::from(self.severity_number) as u64);
        }
        for text in [&self.severity_text, &self.event_name] {
            if !text.is_empty() {
                len += 1 + delimited_len(text.len());
            }
        }
        for id in [&self.trace_id, &self.span_id] {
            if !id.is_empty() {
                len += 1 + delimited_len(id.len());
            }
        }
        if let Some(body) = &self.body {
            len += 1 + delimited_len(body.encoded_len());
        }
        len + attributes_len(&self.attributes)
    }
}

impl<'a> KeyValue<'a> {
    fn decode(buf: &'a [u8], depth: u32) -> Result<Self, DecodeError> {
        let mut kv = KeyValue::default();
        fields(buf, |tag, wire, buf| {
            match tag {
                1 => kv.key = string(wire, buf)?,
                2 => kv.value = any_value_decode(delimited(wire, buf)?, depth)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(kv)
    }

    fn encoded_len(&self) -> usize {
        let key = if self.key.is_empty() {
            0
        } else {
            1 + delimited_len(self.key.len())
        };
        key + self
            .value
            .as_ref()
            .map_or(0, |v| 1 + delimited_len(v.encoded_len()))
    }
}

/// An `AnyValue` message: its value, `None` when no field is set.
fn any_value_decode(buf: &[u8], depth: u32) -> Result<Option<Value<'_>>, DecodeError> {
    if depth >= RECURSION_LIMIT {
        return Err(DecodeError::new("recursion limit reached"));
    }
    let mut value = None;
    fields(buf, |tag, wire, buf| {
        value = Some(match tag {
            1 => Value::String(string(wire, buf)?),
            2 => Value::Bool(varint(wire, buf)? != 0),
            3 => Value::Int(varint(wire, buf)? as i64),
            4 => Value::Double(f64::from_bits(fixed64(wire, buf)?)),
            5 => {
                let mut values = Vec::new();
                repeated_1(delimited(wire, buf)?, |item| {
                    values.push(any_value_decode(item, depth + 1)?);
                    Ok(())
                })?;
                Value::Array(values)
            }
            6 => {
                let mut values = Vec::new();
                repeated_1(delimited(wire, buf)?, |item| {
                    values.push(KeyValue::decode(item, depth + 1)?);
                    Ok(())
                })?;
                Value::Kvlist(values)
            }
            7 => Value::Bytes(Cow::Borrowed(delimited(wire, buf)?)),
            8 => Value::Strindex(varint(wire, buf)? as i32),
            _ => return Ok(false),
        });
        Ok(true)
    })?;
    Ok(value)
}

impl Value<'_> {
    /// The protobuf size of the `AnyValue` holding this value.
    fn encoded_len(&self) -> usize {
        1 + match self {
            Value::String(s) => delimited_len(s.len()),
            Value::Bool(_) => 1,
            Value::Int(i) => encoded_len_varint(*i as u64),
            Value::Double(_) => 8,
            Value::Array(values) => delimited_len(
                values
                    .iter()
                    .map(|v| 1 + delimited_len(v.as_ref().map_or(0, Value::encoded_len)))
                    .sum(),
            ),
            Value::Kvlist(values) => delimited_len(attributes_len(values)),
            Value::Bytes(b) => delimited_len(b.len()),
            Value::Strindex(i) => encoded_len_varint(i64::from(*i) as u64),
        }
    }
}

/// The size of a repeated `KeyValue` field numbered 1–15.
fn attributes_len(attributes: &[KeyValue<'_>]) -> usize {
    attributes
        .iter()
        .map(|kv| 1 + delimited_len(kv.encoded_len()))
        .sum()
}

fn delimited_len(len: usize) -> usize {
    encoded_len_varint(len as u64) + len
}

/// Calls `field(tag, wire_type, rest)` for each field of the message in
/// `buf`; `field` reads the value from `rest` and returns true, or returns
/// false and the field is skipped.
fn fields<'a>(
    mut buf: &'a [u8],
    mut field: impl FnMut(u32, WireType, &mut &'a [u8]) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf)?;
        if !field(tag, wire, &mut buf)? {
            skip_field(wire, tag, &mut buf, DecodeContext::default())?;
        }
    }
    Ok(())
}

/// Calls `item` with each value of field 1, a repeated message, of the
/// message in `buf` (`Resource`, `ArrayValue`, `KeyValueList`); other
/// fields are skipped.
fn repeated_1<'a>(
    buf: &'a [u8],
    mut item: impl FnMut(&'a [u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    fields(buf, |tag, wire, buf| {
        if tag != 1 {
            return Ok(false);
        }
        item(delimited(wire, buf)?)?;
        Ok(true)
    })
}

/// A length-delimited field's bytes.
fn delimited<'a>(wire: WireType, buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    check_wire_type(WireType::LengthDelimited, wire)?;
    let len = decode_varint(buf)?;
    if len > buf.len() as u64 {
        return Err(DecodeError::new("buffer underflow"));
    }
    let (value, rest) = buf.split_at(len as usize);
    *buf = rest;
    Ok(value)
}

fn string<'a>(wire: WireType, buf: &mut &'a [u8]) -> Result<Cow<'a, str>, DecodeError> {
    std::str::from_utf8(delimited(wire, buf)?)
        .map(Cow::Borrowed)
        .map_err(|_| DecodeError::new("invalid string value: data is not UTF-8 encoded"))
}

fn varint(wire: WireType, buf: &mut &[u8]) -> Result<u64, DecodeError> {
    check_wire_type(WireType::Varint, wire)?;
    Ok(decode_varint(buf)?)
}

fn fixed<const N: usize>(
    expected: WireType,
    wire: WireType,
    buf: &mut &[u8],
) -> Result<[u8; N], DecodeError> {
    check_wire_type(expected, wire)?;
    let Some((value, rest)) = buf.split_first_chunk::<N>() else {
        return Err(DecodeError::new("buffer underflow"));
    };
    *buf = rest;
    Ok(*value)
}

fn fixed64(wire: WireType, buf: &mut &[u8]) -> Result<u64, DecodeError> {
    fixed::<8>(WireType::SixtyFourBit, wire, buf).map(u64::from_le_bytes)
}

fn fixed32(wire: WireType, buf: &mut &[u8]) -> Result<u32, DecodeError> {
    fixed::<4>(WireType::ThirtyTwoBit, wire, buf).map(u32::from_le_bytes)
}

// ---- OTLP/JSON ----

/// Why an OTLP/JSON request could not be read.
#[derive(Debug)]
pub enum JsonError {
    Utf8(std::str::Utf8Error),
    Json(serde_json::Error),
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            JsonError::Utf8(e) => write!(f, "not UTF-8: {e}"),
            JsonError::Json(e) => e.fmt(f),
        }
    }
}

/// An `AnyValue` object: `{"stringValue": "…"}`, `{"intValue": "10"}`, …;
/// `{}` or `null` is an empty value.
fn any_value<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Value<'a>>, D::Error> {
    AnyJson::deserialize(d).map(|any| any.0)
}

struct AnyJson<'a>(Option<Value<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for AnyJson<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AnyVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for AnyVisitor<'a> {
            type Value = AnyJson<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an OTLP AnyValue object")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(AnyJson(None))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut value = None;
                while let Some(key) = map.next_key::<Str<'a>>()? {
                    value = Some(match &*key.0 {
                        "stringValue" | "string_value" => Value::String(map.next_value::<Str>()?.0),
                        "boolValue" | "bool_value" => Value::Bool(map.next_value()?),
                        "intValue" | "int_value" => Value::Int(map.next_value::<Int>()?.0),
                        "doubleValue" | "double_value" => {
                            Value::Double(map.next_value::<Double>()?.0)
                        }
                        "arrayValue" | "array_value" => Value::Array(
                            map.next_value::<List<AnyJson>>()?
                                .values
                                .into_iter()
                                .map(|any| any.0)
                                .collect(),
                        ),
                        "kvlistValue" | "kvlist_value" => {
                            Value::Kvlist(map.next_value::<List<KeyValue>>()?.values)
                        }
                        "bytesValue" | "bytes_value" => {
                            let text = map.next_value::<Str>()?.0;
                            let bytes = base64::engine::general_purpose::STANDARD
                                .decode(text.as_bytes())
                                .map_err(|e| de::Error::custom(format!("bytesValue: {e}")))?;
                            Value::Bytes(Cow::Owned(bytes))
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    });
                }
                Ok(AnyJson(value))
            }
        }
        d.deserialize_any(AnyVisitor(std::marker::PhantomData))
    }
}

/// `ArrayValue` / `KeyValueList`: `{"values": [...]}`.
#[derive(Deserialize)]
#[serde(default, bound = "T: Deserialize<'de>")]
struct List<T> {
    values: Vec<T>,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List { values: Vec::new() }
    }
}

/// A JSON string, borrowed from the body when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        d.deserialize_str(StrVisitor(std::marker::PhantomData))
    }
}

/// An integer given as a JSON number or a decimal string (the protobuf
/// JSON mapping writes 64-bit integers as strings).
macro_rules! integer_visitor {
    ($name:ident, $ty:ty, $what:literal) => {
        struct $name;
        impl Visitor<'_> for $name {
            type Value = $ty;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str($what)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                <$ty>::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                <$ty>::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                v.parse()
                    .map_err(|_| E::custom(format!("{v:?} is not {}", $what)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<$ty, E> {
                Ok(0)
            }
        }
    };
}

integer_visitor!(U64Visitor, u64, "an unsigned 64-bit integer");
integer_visitor!(U32Visitor, u32, "an unsigned 32-bit integer");
integer_visitor!(I64Visitor, i64, "a 64-bit integer");

fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor)
}

fn uint32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    d.deserialize_any(U32Visitor)
}

struct Int(i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(I64Visitor).map(Int)
    }
}

/// A double as a JSON number, or as a string: `"NaN"`, `"Infinity"`,
/// `"-Infinity"` (JSON has no such numbers) or a decimal.
struct Double(f64);

impl<'de> Deserialize<'de> for Double {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DoubleVisitor;
        impl Visitor<'_> for DoubleVisitor {
            type Value = f64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a double")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
                Ok(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
                match v {
                    "NaN" => Ok(f64::NAN),
                    "Infinity" => Ok(f64::INFINITY),
                    "-Infinity" => Ok(f64::NEG_INFINITY),
                    _ => v
                        .parse()
                        .map_err(|_| E::custom(format!("{v:?} is not a double"))),
                }
            }
        }
        d.deserialize_any(DoubleVisitor).map(Double)
    }
}

/// `severityNumber`: a number, or the enum's name (`SEVERITY_NUMBER_INFO`).
fn severity<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    struct SeverityVisitor;
    impl Visitor<'_> for SeverityVisitor {
        type Value = i32;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a severity number or name")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i32, E> {
            i32::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i32, E> {
            i32::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i32, E> {
            use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
            SeverityNumber::from_str_name(v)
                .map(|s| s as i32)
                .ok_or_else(|| E::custom(format!("{v:?} is not a severity number")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<i32, E> {
            Ok(0)
        }
    }
    d.deserialize_any(SeverityVisitor)
}

/// `traceId` / `spanId`: hex (the OTLP/JSON exception to base64 bytes).
fn hex_bytes<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Cow<'a, [u8]>, D::Error> {
    let text = Str::deserialize(d)?.0;
    hex::decode(text.as_bytes())
        .map(Cow::Owned)
        .map_err(|e| de::Error::custom(format!("{text:?} is not a hex id: {e}")))
}

//! ClickHouse column types of Arrow fields, and RowBinary's `String` for
//! the sink's own small inserts (the ledger, dead letters).
//!
//! Records themselves go as Native blocks (`native.rs`). Only types that
//! ClickHouse 18.16 and current releases share are produced (see
//! [`column_type`]).

use arrow::datatypes::{DataType, Field, TimeUnit};

use crate::error::{Error, Result};

/// The ClickHouse type of an Arrow field. Timestamps become `Int64`
/// milliseconds: 18.16 has no `DateTime64`, and `DateTime` would drop the
/// milliseconds.
pub fn column_type(field: &Field) -> Result<String> {
    let base = match field.data_type() {
        DataType::Utf8 | DataType::Binary => "String",
        DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64 => "Int64",
        DataType::UInt8 | DataType::Boolean => "UInt8",
        DataType::UInt16 => "UInt16",
        DataType::UInt32 => "UInt32",
        DataType::UInt64 => "UInt64",
        DataType::Float32 => "Float32",
        DataType::Float64 => "Float64",
        DataType::Date32 => "Date",
        other => {
            return Err(Error::Config(format!(
                "column {} has type {other}, which the ClickHouse sink does not map",
                field.name()
            )));
        }
    };
    Ok(if field.is_nullable() {
        format!("Nullable({base})")
    } else {
        base.to_string()
    })
}

pub(super) fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A RowBinary `String`: LEB128 length, then the bytes.
pub fn bytes(b: &[u8], out: &mut Vec<u8>) {
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_leb128() {
        let mut out = Vec::new();
        for n in [0u64, 1, 127, 128, 300, 16_384] {
            varint(n, &mut out);
        }
        assert_eq!(out, [0, 1, 0x7f, 0x80, 0x01, 0xac, 0x02, 0x80, 0x80, 0x01]);
    }

    #[test]
    fn every_schema_maps() {
        for kind in schemas::RecordKind::ALL {
            for f in schemas::schema::schema(kind).fields() {
                column_type(f).unwrap();
            }
        }
    }
}

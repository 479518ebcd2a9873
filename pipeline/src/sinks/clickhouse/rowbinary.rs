//! Arrow record batches → ClickHouse RowBinary.
//!
//! The `clickhouse` crate serialises Rust structs; our rows are Arrow
//! batches of seven schemas, so the encoding is done column-wise here and
//! sent through the crate's formatted insert. Only types that ClickHouse
//! 18.16 and current releases share are produced (see [`column_type`]).

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array,
    Int64Array, StringArray, TimestampMillisecondArray, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, TimeUnit};
use arrow::record_batch::RecordBatch;

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

fn varint(mut n: u64, out: &mut Vec<u8>) {
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

/// One column, downcast once.
enum Col<'a> {
    Str(&'a StringArray),
    Bin(&'a BinaryArray),
    Ts(&'a TimestampMillisecondArray),
    I64(&'a Int64Array),
    U8(&'a UInt8Array),
    Bool(&'a BooleanArray),
    U16(&'a UInt16Array),
    U32(&'a UInt32Array),
    U64(&'a UInt64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Date(&'a Date32Array),
}

fn col<'a>(array: &'a ArrayRef, field: &Field) -> Result<Col<'a>> {
    Ok(match field.data_type() {
        DataType::Utf8 => Col::Str(array.as_string()),
        DataType::Binary => Col::Bin(array.as_binary()),
        DataType::Timestamp(TimeUnit::Millisecond, _) => Col::Ts(array.as_primitive()),
        DataType::Int64 => Col::I64(array.as_primitive()),
        DataType::UInt8 => Col::U8(array.as_primitive()),
        DataType::Boolean => Col::Bool(array.as_boolean()),
        DataType::UInt16 => Col::U16(array.as_primitive()),
        DataType::UInt32 => Col::U32(array.as_primitive()),
        DataType::UInt64 => Col::U64(array.as_primitive()),
        DataType::Float32 => Col::F32(array.as_primitive()),
        DataType::Float64 => Col::F64(array.as_primitive()),
        DataType::Date32 => Col::Date(array.as_primitive()),
        other => {
            return Err(Error::Config(format!(
                "column {} has type {other}, which the ClickHouse sink does not map",
                field.name()
            )));
        }
    })
}

/// Appends every row of `batch`, followed by its row number in the batch
/// (`UInt32`, the last column of every table: with `batch_id` it makes a
/// row's identity, which is what de-duplicates a replayed batch).
pub fn encode(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    let schema = batch.schema();
    let cols: Vec<(Col<'_>, bool)> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(a, f)| Ok((col(a, f)?, f.is_nullable())))
        .collect::<Result<_>>()?;
    out.reserve(batch.num_rows() * 256);
    for row in 0..batch.num_rows() {
        for (c, nullable) in &cols {
            let array: &dyn Array = match c {
                Col::Str(a) => *a,
                Col::Bin(a) => *a,
                Col::Ts(a) => *a,
                Col::I64(a) => *a,
                Col::U8(a) => *a,
                Col::Bool(a) => *a,
                Col::U16(a) => *a,
                Col::U32(a) => *a,
                Col::U64(a) => *a,
                Col::F32(a) => *a,
                Col::F64(a) => *a,
                Col::Date(a) => *a,
            };
            if *nullable {
                if array.is_null(row) {
                    out.push(1);
                    continue;
                }
                out.push(0);
            }
            match c {
                Col::Str(a) => bytes(a.value(row).as_bytes(), out),
                Col::Bin(a) => bytes(a.value(row), out),
                Col::Ts(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                Col::I64(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                Col::U8(a) => out.push(a.value(row)),
                Col::Bool(a) => out.push(u8::from(a.value(row))),
                Col::U16(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                Col::U32(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                Col::U64(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                Col::F32(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                Col::F64(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                Col::Date(a) => {
                    // ClickHouse Date: UInt16 days since 1970-01-01.
                    let days = u16::try_from(a.value(row)).map_err(|_| Error::Sink {
                        sink: "clickhouse",
                        message: format!(
                            "date {} is outside ClickHouse's Date range",
                            a.value(row)
                        ),
                    })?;
                    out.extend_from_slice(&days.to_le_bytes());
                }
            }
        }
        out.extend_from_slice(&(row as u32).to_le_bytes());
    }
    Ok(())
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

    #[test]
    fn nullable_strings_and_numbers_encode() {
        use std::sync::Arc;
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::UInt16, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("ab"), None])),
                Arc::new(UInt16Array::from(vec![1, 258])),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        encode(&batch, &mut out).unwrap();
        assert_eq!(
            out,
            // row 0: Some("ab"), 1, row 0; row 1: NULL, 258 (LE 2,1), row 1
            [0, 2, b'a', b'b', 1, 0, 0, 0, 0, 0, 1, 2, 1, 1, 0, 0, 0]
        );
    }
}

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
use arrow::buffer::NullBuffer;
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
///
/// RowBinary is row-major, Arrow column-major. Walking rows and matching
/// every cell's column type costs a dispatch and a null check through a
/// trait object per cell; instead a first pass adds up each row's encoded
/// size column by column, and a second writes each column's values straight
/// into their rows' places. Every inner loop handles one Arrow type.
pub fn encode(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    let rows = batch.num_rows();
    let schema = batch.schema();
    let cols: Vec<Column<'_>> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(a, f)| {
            Ok(Column {
                values: col(a, f)?,
                // Only a nullable column carries the null flag; a column
                // declared NOT NULL has no nulls to write.
                nulls: if f.is_nullable() {
                    Some(a.logical_nulls())
                } else {
                    None
                },
            })
        })
        .collect::<Result<_>>()?;

    // Pass 1: each row's size; then its start in `out`.
    let mut at: Vec<usize> = vec![4; rows];
    for c in &cols {
        c.add_sizes(&mut at);
    }
    let mut end = out.len();
    for p in at.iter_mut() {
        let size = *p;
        *p = end;
        end += size;
    }
    out.resize(end, 0);

    // Pass 2: the values, column by column, each at its row's cursor.
    for c in &cols {
        c.write(out, &mut at)?;
    }
    for (row, p) in at.iter().enumerate() {
        out[*p..*p + 4].copy_from_slice(&(row as u32).to_le_bytes());
    }
    Ok(())
}

struct Column<'a> {
    values: Col<'a>,
    /// `Some` for a nullable column (with its null buffer, if it has nulls).
    nulls: Option<Option<NullBuffer>>,
}

fn varint_len(n: usize) -> usize {
    // 7 bits per byte; at least one byte.
    (usize::BITS as usize - (n | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(mut n: usize, out: &mut [u8]) -> usize {
    let mut i = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

impl Column<'_> {
    fn is_null(&self, row: usize) -> bool {
        matches!(&self.nulls, Some(Some(n)) if n.is_null(row))
    }

    fn flag(&self) -> usize {
        usize::from(self.nulls.is_some())
    }

    fn add_sizes(&self, at: &mut [usize]) {
        let flag = self.flag();
        let width = match &self.values {
            Col::Str(a) => return self.add_var_sizes(at, a.value_offsets()),
            Col::Bin(a) => return self.add_var_sizes(at, a.value_offsets()),
            Col::Ts(_) | Col::I64(_) | Col::U64(_) | Col::F64(_) => 8,
            Col::U32(_) | Col::F32(_) => 4,
            Col::U16(_) | Col::Date(_) => 2,
            Col::U8(_) | Col::Bool(_) => 1,
        };
        match &self.nulls {
            Some(Some(nulls)) => {
                for (row, p) in at.iter_mut().enumerate() {
                    *p += 1 + if nulls.is_null(row) { 0 } else { width };
                }
            }
            _ => at.iter_mut().for_each(|p| *p += flag + width),
        }
    }

    fn add_var_sizes<O: arrow::array::OffsetSizeTrait>(&self, at: &mut [usize], offsets: &[O]) {
        let flag = self.flag();
        for (row, p) in at.iter_mut().enumerate() {
            if self.is_null(row) {
                *p += 1;
                continue;
            }
            let len = (offsets[row + 1] - offsets[row]).as_usize();
            *p += flag + varint_len(len) + len;
        }
    }

    fn write(&self, out: &mut [u8], at: &mut [usize]) -> Result<()> {
        match &self.values {
            Col::Str(a) => self.write_var(out, at, |r| a.value(r).as_bytes()),
            Col::Bin(a) => self.write_var(out, at, |r| a.value(r)),
            Col::Ts(a) => self.write_fixed(out, at, |r| a.value(r).to_le_bytes()),
            Col::I64(a) => self.write_fixed(out, at, |r| a.value(r).to_le_bytes()),
            Col::U64(a) => self.write_fixed(out, at, |r| a.value(r).to_le_bytes()),
            Col::F64(a) => self.write_fixed(out, at, |r| a.value(r).to_le_bytes()),
            Col::U32(a) => self.write_fixed(out, at, |r| a.value(r).to_le_bytes()),
            Col::F32(a) => self.write_fixed(out, at, |r| a.value(r).to_le_bytes()),
            Col::U16(a) => self.write_fixed(out, at, |r| a.value(r).to_le_bytes()),
            Col::U8(a) => self.write_fixed(out, at, |r| [a.value(r)]),
            Col::Bool(a) => self.write_fixed(out, at, |r| [u8::from(a.value(r))]),
            Col::Date(a) => {
                // ClickHouse Date: UInt16 days since 1970-01-01.
                for row in 0..at.len() {
                    if !self.is_null(row) && u16::try_from(a.value(row)).is_err() {
                        return Err(Error::Sink {
                            sink: "clickhouse",
                            message: format!(
                                "date {} is outside ClickHouse's Date range",
                                a.value(row)
                            ),
                        });
                    }
                }
                self.write_fixed(out, at, |r| (a.value(r) as u16).to_le_bytes());
            }
        }
        Ok(())
    }

    /// Writes the null flag (nullable columns); whether a value follows.
    fn write_flag(&self, out: &mut [u8], p: &mut usize, row: usize) -> bool {
        if self.nulls.is_none() {
            return true;
        }
        let null = self.is_null(row);
        out[*p] = u8::from(null);
        *p += 1;
        !null
    }

    fn write_fixed<const W: usize>(
        &self,
        out: &mut [u8],
        at: &mut [usize],
        value: impl Fn(usize) -> [u8; W],
    ) {
        for (row, p) in at.iter_mut().enumerate() {
            if self.write_flag(out, p, row) {
                out[*p..*p + W].copy_from_slice(&value(row));
                *p += W;
            }
        }
    }

    fn write_var<'v>(&self, out: &mut [u8], at: &mut [usize], value: impl Fn(usize) -> &'v [u8]) {
        for (row, p) in at.iter_mut().enumerate() {
            if self.write_flag(out, p, row) {
                let v = value(row);
                *p += put_varint(v.len(), &mut out[*p..]);
                out[*p..*p + v.len()].copy_from_slice(v);
                *p += v.len();
            }
        }
    }
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

    /// The row-by-row encoding the columnar one replaced: the reference
    /// it must match byte for byte.
    fn reference(batch: &RecordBatch) -> Vec<u8> {
        let schema = batch.schema();
        let mut out = Vec::new();
        for row in 0..batch.num_rows() {
            for (a, f) in batch.columns().iter().zip(schema.fields()) {
                if f.is_nullable() {
                    if a.is_null(row) {
                        out.push(1);
                        continue;
                    }
                    out.push(0);
                }
                match col(a, f).unwrap() {
                    Col::Str(a) => bytes(a.value(row).as_bytes(), &mut out),
                    Col::Bin(a) => bytes(a.value(row), &mut out),
                    Col::Ts(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                    Col::I64(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                    Col::U8(a) => out.push(a.value(row)),
                    Col::Bool(a) => out.push(u8::from(a.value(row))),
                    Col::U16(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                    Col::U32(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                    Col::U64(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                    Col::F32(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                    Col::F64(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                    Col::Date(a) => out.extend_from_slice(&(a.value(row) as u16).to_le_bytes()),
                }
            }
            out.extend_from_slice(&(row as u32).to_le_bytes());
        }
        out
    }

    /// Every mapped type, nullable and not, with and without nulls, strings
    /// of lengths around the varint steps (127/128, 16383/16384 bytes).
    #[test]
    fn columnar_encoding_matches_the_row_by_row_reference() {
        use std::sync::Arc;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for rows in [0_usize, 1, 7, 300] {
            let mut fields = Vec::new();
            let mut arrays: Vec<ArrayRef> = Vec::new();
            for nullable in [false, true] {
                let keep = |r: &mut dyn FnMut() -> u64| !nullable || !r().is_multiple_of(4);
                let n =
                    |name: &str, t: DataType| Field::new(format!("{name}_{nullable}"), t, nullable);
                let mut strs = Vec::new();
                let mut bins = Vec::new();
                let mut ts = Vec::new();
                let mut i64s = Vec::new();
                let mut u8s = Vec::new();
                let mut bools = Vec::new();
                let mut u16s = Vec::new();
                let mut u32s = Vec::new();
                let mut u64s = Vec::new();
                let mut f32s = Vec::new();
                let mut f64s = Vec::new();
                let mut dates = Vec::new();
                for _ in 0..rows {
                    let len = [0, 1, 127, 128, 16_383, 16_384][(next() % 6) as usize];
                    let s = "x".repeat(len);
                    strs.push(keep(&mut next).then(|| s.clone()));
                    bins.push(keep(&mut next).then(|| s.clone().into_bytes()));
                    ts.push(keep(&mut next).then(|| next() as i64));
                    i64s.push(keep(&mut next).then(|| next() as i64));
                    u8s.push(keep(&mut next).then(|| next() as u8));
                    bools.push(keep(&mut next).then(|| next() % 2 == 0));
                    u16s.push(keep(&mut next).then(|| next() as u16));
                    u32s.push(keep(&mut next).then(|| next() as u32));
                    u64s.push(keep(&mut next).then(&mut next));
                    f32s.push(keep(&mut next).then(|| next() as f32));
                    f64s.push(keep(&mut next).then(|| next() as f64 / 3.0));
                    dates.push(keep(&mut next).then(|| (next() % 40_000) as i32));
                }
                fields.extend([
                    n("s", DataType::Utf8),
                    n("b", DataType::Binary),
                    n("ts", DataType::Timestamp(TimeUnit::Millisecond, None)),
                    n("i64", DataType::Int64),
                    n("u8", DataType::UInt8),
                    n("bool", DataType::Boolean),
                    n("u16", DataType::UInt16),
                    n("u32", DataType::UInt32),
                    n("u64", DataType::UInt64),
                    n("f32", DataType::Float32),
                    n("f64", DataType::Float64),
                    n("date", DataType::Date32),
                ]);
                arrays.extend([
                    Arc::new(StringArray::from(strs)) as ArrayRef,
                    Arc::new(BinaryArray::from_iter(bins)),
                    Arc::new(TimestampMillisecondArray::from(ts)),
                    Arc::new(Int64Array::from(i64s)),
                    Arc::new(UInt8Array::from(u8s)),
                    Arc::new(BooleanArray::from(bools)),
                    Arc::new(UInt16Array::from(u16s)),
                    Arc::new(UInt32Array::from(u32s)),
                    Arc::new(UInt64Array::from(u64s)),
                    Arc::new(Float32Array::from(f32s)),
                    Arc::new(Float64Array::from(f64s)),
                    Arc::new(Date32Array::from(dates)),
                ]);
            }
            let schema = Arc::new(arrow::datatypes::Schema::new(fields));
            let batch = RecordBatch::try_new(schema, arrays).unwrap();
            let mut out = vec![7, 7];
            encode(&batch, &mut out).unwrap();
            assert_eq!(&out[..2], [7, 7], "appends");
            assert_eq!(out[2..], reference(&batch), "{rows} rows");
        }
    }

    #[test]
    fn dates_outside_the_clickhouse_range_are_refused() {
        use std::sync::Arc;
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![Field::new(
            "d",
            DataType::Date32,
            true,
        )]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Date32Array::from(vec![
                None,
                Some(1),
                Some(70_000),
            ]))],
        )
        .unwrap();
        let err = encode(&batch, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("70000"), "{err}");
    }
}

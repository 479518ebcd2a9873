//! Arrow record batches → ClickHouse's Native format (one block a batch).
//!
//! Native is ClickHouse's own columnar format: a block is the number of
//! columns and rows, then each column as its name, its type and its values
//! one after another — Arrow's layout, so numbers go out as Arrow's value
//! buffers and only strings and nulls are rewritten. The server reads it
//! without parsing rows (RowBinary makes it decode row by row, cell by
//! cell), which is most of an insert's cost on its side
//! (docs/benchmarks.md, the ClickHouse sink).
//!
//! The wire form ClickHouse 18.16 and current releases share over HTTP
//! (`INSERT … FORMAT Native`, no block info, no custom serialisations):
//!
//! - block: `VarUInt` columns, `VarUInt` rows, then each column;
//! - column: name and type name as `String`s (`VarUInt` length, bytes),
//!   then the values;
//! - fixed-width types: the values, little-endian; `Date` is `UInt16`
//!   days since 1970-01-01;
//! - `String`: each value as `VarUInt` length and bytes;
//! - `Nullable(T)`: one `UInt8` a row (1 = null), then the `T` column with
//!   a default value in the null rows.

use arrow::array::ArrayData;
use arrow::array::{Array, ArrayRef, AsArray, OffsetSizeTrait};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Date32Type, Field};
use arrow::record_batch::RecordBatch;

use super::rowbinary::{bytes as string, column_type, varint};
use crate::error::{Error, Result};

/// Appends `batch` as one Native block, followed by the `row_in_batch`
/// column (`UInt32`, the row's number in the batch: with `batch_id` the
/// row's identity, which is what de-duplicates a replayed batch).
pub fn encode(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    let rows = batch.num_rows();
    varint(batch.num_columns() as u64 + 1, out);
    varint(rows as u64, out);
    let schema = batch.schema();
    for (array, field) in batch.columns().iter().zip(schema.fields()) {
        string(field.name().as_bytes(), out);
        string(column_type(field)?.as_bytes(), out);
        column(array, field, out)?;
    }
    string(b"row_in_batch", out);
    string(b"UInt32", out);
    out.reserve(rows * 4);
    for row in 0..rows as u32 {
        out.extend_from_slice(&row.to_le_bytes());
    }
    Ok(())
}

fn column(array: &ArrayRef, field: &Field, out: &mut Vec<u8>) -> Result<()> {
    // Only a column declared nullable carries the null map (its type is
    // `Nullable(T)`); one declared NOT NULL has no nulls to write.
    let nulls = if field.is_nullable() {
        let nulls = array.logical_nulls();
        null_map(nulls.as_ref(), array.len(), out);
        nulls
    } else {
        None
    };
    let nulls = nulls.as_ref();
    match field.data_type() {
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            strings(a.value_offsets(), a.value_data(), nulls, out);
        }
        DataType::Binary => {
            let a = array.as_binary::<i32>();
            strings(a.value_offsets(), a.value_data(), nulls, out);
        }
        DataType::Boolean => {
            let a = array.as_boolean();
            out.extend(a.values().iter().map(u8::from));
        }
        DataType::Date32 => {
            let a = array.as_primitive::<Date32Type>();
            out.reserve(a.len() * 2);
            for (row, &days) in a.values().iter().enumerate() {
                let null = nulls.is_some_and(|n| n.is_null(row));
                let days = match u16::try_from(days) {
                    Ok(d) => d,
                    Err(_) if null => 0,
                    Err(_) => {
                        return Err(Error::Sink {
                            sink: "clickhouse",
                            message: format!("date {days} is outside ClickHouse's Date range"),
                        });
                    }
                };
                out.extend_from_slice(&days.to_le_bytes());
            }
        }
        // Timestamps (milliseconds), integers and floats.
        t if t.is_primitive() => fixed(&array.to_data(), out),
        // `encode` asked `column_type` first, which refuses other types.
        other => unreachable!("column_type maps no {other}"),
    }
    Ok(())
}

/// `Nullable`'s null map: a byte a row, 1 where the row is null.
fn null_map(nulls: Option<&NullBuffer>, rows: usize, out: &mut Vec<u8>) {
    match nulls {
        Some(n) => out.extend(n.iter().map(|valid| u8::from(!valid))),
        None => out.resize(out.len() + rows, 0),
    }
}

// Native is little-endian, and `fixed` writes Arrow's buffers as they are
// in memory: so is every target we build for (x86-64, aarch64).
#[cfg(target_endian = "big")]
compile_error!("the ClickHouse Native encoder needs a little-endian target");

/// Fixed-width values: the array's part of Arrow's value buffer as it is;
/// whatever Arrow holds under a null is written too (ClickHouse ignores
/// values under its null map).
fn fixed(data: &ArrayData, out: &mut Vec<u8>) {
    let width = data
        .data_type()
        .primitive_width()
        .expect("a primitive type");
    let (from, to) = (data.offset() * width, (data.offset() + data.len()) * width);
    out.extend_from_slice(&data.buffers()[0].as_slice()[from..to]);
}

/// `String` values (null rows as empty strings). Appending value by value
/// measured faster than sizing the column first and writing in place
/// (0.93 against 1.45 ms per 10,000 log rows).
fn strings<O: OffsetSizeTrait>(
    offsets: &[O],
    data: &[u8],
    nulls: Option<&NullBuffer>,
    out: &mut Vec<u8>,
) {
    let rows = offsets.len() - 1;
    let (first, last) = (offsets[0].as_usize(), offsets[rows].as_usize());
    // The bytes and a length byte a value; longer lengths grow it once more.
    out.reserve(last - first + rows);
    for (row, w) in offsets.windows(2).enumerate() {
        if nulls.is_some_and(|n| n.is_null(row)) {
            out.push(0);
            continue;
        }
        string(&data[w[0].as_usize()..w[1].as_usize()], out);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int64Array,
        StringArray, TimestampMillisecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
    };
    use arrow::datatypes::{
        Float32Type, Float64Type, Int64Type, Schema, TimeUnit, TimestampMillisecondType, UInt8Type,
        UInt16Type, UInt32Type, UInt64Type,
    };

    use super::*;

    #[test]
    fn a_block_is_columns_rows_then_each_column_named_and_typed() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::UInt16, false),
            Field::new("b", DataType::Boolean, false),
            Field::new("d", DataType::Date32, true),
            Field::new("f", DataType::Float64, false),
            Field::new("i", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("ab"), None])),
                Arc::new(UInt16Array::from(vec![1, 258])),
                Arc::new(BooleanArray::from(vec![true, false])),
                Arc::new(Date32Array::from(vec![None, Some(20_000)])),
                Arc::new(Float64Array::from(vec![0.5, -2.0])),
                Arc::new(Int64Array::from(vec![Some(-1), None])),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        encode(&batch, &mut out).unwrap();
        let mut want: Vec<u8> = vec![7, 2];
        let mut named = |name: &str, ty: &str, values: &[u8]| {
            want.push(name.len() as u8);
            want.extend_from_slice(name.as_bytes());
            want.push(ty.len() as u8);
            want.extend_from_slice(ty.as_bytes());
            want.extend_from_slice(values);
        };
        named("s", "Nullable(String)", &[0, 1, 2, b'a', b'b', 0]);
        named("n", "UInt16", &[1, 0, 2, 1]);
        named("b", "UInt8", &[1, 0]);
        let d = 20_000u16.to_le_bytes();
        named("d", "Nullable(Date)", &[1, 0, 0, 0, d[0], d[1]]);
        let mut f = 0.5f64.to_le_bytes().to_vec();
        f.extend_from_slice(&(-2.0f64).to_le_bytes());
        named("f", "Float64", &f);
        // The null row's value is whatever Arrow holds there (0 here).
        let mut i = vec![0, 1];
        i.extend_from_slice(&(-1i64).to_le_bytes());
        i.extend_from_slice(&0i64.to_le_bytes());
        named("i", "Nullable(Int64)", &i);
        named("row_in_batch", "UInt32", &[0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(out, want);
    }

    #[test]
    fn sliced_arrays_write_only_their_rows() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["x", "yz", "w"])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap()
        .slice(1, 1);
        let mut out = Vec::new();
        encode(&batch, &mut out).unwrap();
        let tail = &out[out.len() - 4 - 1 - b"UInt32".len() - 1 - b"row_in_batch".len()..];
        assert!(tail.starts_with(&[12]));
        let body = &out[2..out.len() - tail.len()];
        let mut want = vec![1, b's', 6];
        want.extend_from_slice(b"String");
        want.extend_from_slice(&[2, b'y', b'z', 1, b'n', 5]);
        want.extend_from_slice(b"Int64");
        want.extend_from_slice(&2i64.to_le_bytes());
        assert_eq!(body, &want[..]);
        assert_eq!(&out[..2], &[3, 1]);
    }

    /// The reference the encoder must match byte for byte: each column
    /// written value by value through Arrow's accessors.
    fn reference(batch: &RecordBatch) -> Vec<u8> {
        let rows = batch.num_rows();
        let mut out = Vec::new();
        varint(batch.num_columns() as u64 + 1, &mut out);
        varint(rows as u64, &mut out);
        for (a, f) in batch.columns().iter().zip(batch.schema().fields()) {
            string(f.name().as_bytes(), &mut out);
            string(column_type(f).unwrap().as_bytes(), &mut out);
            if f.is_nullable() {
                out.extend((0..rows).map(|r| u8::from(a.is_null(r))));
            }
            for r in 0..rows {
                let null = a.is_null(r);
                match f.data_type() {
                    DataType::Utf8 if null => out.push(0),
                    DataType::Utf8 => string(a.as_string::<i32>().value(r).as_bytes(), &mut out),
                    DataType::Binary if null => out.push(0),
                    DataType::Binary => string(a.as_binary::<i32>().value(r), &mut out),
                    DataType::Timestamp(..) => out.extend_from_slice(
                        &a.as_primitive::<TimestampMillisecondType>()
                            .value(r)
                            .to_le_bytes(),
                    ),
                    DataType::Int64 => {
                        out.extend_from_slice(&a.as_primitive::<Int64Type>().value(r).to_le_bytes())
                    }
                    DataType::UInt64 => out
                        .extend_from_slice(&a.as_primitive::<UInt64Type>().value(r).to_le_bytes()),
                    DataType::UInt32 => out
                        .extend_from_slice(&a.as_primitive::<UInt32Type>().value(r).to_le_bytes()),
                    DataType::UInt16 => out
                        .extend_from_slice(&a.as_primitive::<UInt16Type>().value(r).to_le_bytes()),
                    DataType::UInt8 => out.push(a.as_primitive::<UInt8Type>().value(r)),
                    DataType::Float64 => out
                        .extend_from_slice(&a.as_primitive::<Float64Type>().value(r).to_le_bytes()),
                    DataType::Float32 => out
                        .extend_from_slice(&a.as_primitive::<Float32Type>().value(r).to_le_bytes()),
                    DataType::Boolean => out.push(u8::from(a.as_boolean().value(r))),
                    DataType::Date32 => {
                        let d = a.as_primitive::<Date32Type>().value(r);
                        out.extend_from_slice(&(if null { 0 } else { d as u16 }).to_le_bytes())
                    }
                    other => panic!("{other}"),
                }
            }
        }
        string(b"row_in_batch", &mut out);
        string(b"UInt32", &mut out);
        for r in 0..rows as u32 {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out
    }

    /// Every mapped type, nullable and not, with and without nulls, strings
    /// of lengths around the varint steps (127/128, 16383/16384 bytes),
    /// whole batches and slices of them.
    #[test]
    fn columns_match_the_value_by_value_reference() {
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
                let (mut strs, mut bins, mut ts, mut i64s) = (vec![], vec![], vec![], vec![]);
                let (mut u8s, mut bools, mut u16s, mut u32s) = (vec![], vec![], vec![], vec![]);
                let (mut u64s, mut f32s, mut f64s, mut dates) = (vec![], vec![], vec![], vec![]);
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
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
            let mut slices = vec![batch.clone()];
            if rows > 2 {
                slices.push(batch.slice(1, rows - 2));
            }
            for b in slices {
                let mut out = vec![7, 7];
                encode(&b, &mut out).unwrap();
                assert_eq!(&out[..2], [7, 7], "appends");
                assert_eq!(out[2..], reference(&b), "{} rows", b.num_rows());
            }
        }
    }

    #[test]
    fn dates_outside_the_clickhouse_range_are_refused_unless_null() {
        let schema = Arc::new(Schema::new(vec![Field::new("d", DataType::Date32, true)]));
        let bad = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Date32Array::from(vec![Some(-1)]))],
        )
        .unwrap();
        let err = encode(&bad, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("outside ClickHouse's Date range"),
            "{err}"
        );
        let null =
            RecordBatch::try_new(schema, vec![Arc::new(Date32Array::from(vec![None::<i32>]))])
                .unwrap();
        encode(&null, &mut Vec::new()).unwrap();
    }
}

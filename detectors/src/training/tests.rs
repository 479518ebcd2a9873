use rand::Rng;

use super::*;

/// `n` rows of `bytes,failures,port,label,host`: 5 % malicious rows sit far
/// from the benign cloud.
fn labelled_csv(n: usize, seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = String::from("bytes,failures,port,label,host\n");
    for i in 0..n {
        let bad = i % 20 == 0;
        let (b, f) = if bad {
            (rng.random_range(9000.0..12000.0), rng.random_range(30..80))
        } else {
            (rng.random_range(100.0..2000.0), rng.random_range(0..3))
        };
        let port = if bad { 22 } else { 443 };
        let label = if bad { "malicious" } else { "benign" };
        out.push_str(&format!("{b:.1},{f},{port},{label},h{}\n", i % 7));
    }
    out
}

#[test]
fn csv_with_labels_trains_a_random_forest_with_held_out_metrics() {
    let data = parse(
        labelled_csv(2000, 1).as_bytes(),
        Format::Csv,
        Label::Auto,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(data.features, ["bytes", "failures", "port"]);
    assert_eq!(data.ignored_columns, ["host"]);
    assert_eq!(data.label_column.as_deref(), Some("label"));
    assert_eq!(data.rows, 2000);
    assert_eq!(data.class_counts()["malicious"], 100);

    let (model, m) = train(&data, &TrainParams::default()).unwrap();
    assert_eq!(model.kind(), ModelKind::RandomForest);
    assert_eq!((m.train_rows, m.test_rows), (1600, 400));
    assert!(m.accuracy.unwrap() > 0.98, "{m:?}");
    assert!(
        m.precision.unwrap() > 0.9 && m.recall.unwrap() > 0.9,
        "{m:?}"
    );
    assert_eq!(m.positive_class.as_deref(), Some("malicious"));
    assert!(m.isolation_forest_auc.unwrap() > 0.95, "{m:?}");

    let preds = predict(&model, &[10_000.0, 50.0, 22.0, 500.0, 1.0, 443.0]).unwrap();
    assert_eq!(preds[0].label, "malicious");
    assert_eq!(preds[1].label, "benign");
    assert!(
        preds
            .iter()
            .all(|p| p.confidence > 0.8 && p.confidence <= 1.0),
        "{preds:?}"
    );

    // The artifact round-trips through JSON.
    let json = serde_json::to_string(&model).unwrap();
    let back: TrainedModel = serde_json::from_str(&json).unwrap();
    assert_eq!(predict(&back, &[10_000.0, 50.0, 22.0]).unwrap(), preds[..1]);
}

#[test]
fn unlabelled_json_trains_an_isolation_forest() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let rows: Vec<serde_json::Value> = (0..500)
        .map(|_| serde_json::json!({"events": rng.random_range(10.0..20.0), "errors": rng.random_range(0..2), "note": "x"}))
        .collect();
    let body = serde_json::to_string(&rows).unwrap();
    let data = parse(
        body.as_bytes(),
        Format::Json,
        Label::Auto,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(data.features, ["errors", "events"]); // serde_json sorts keys
    assert!(data.labels.is_none());
    let (model, m) = train(&data, &TrainParams::default()).unwrap();
    assert_eq!(model.kind(), ModelKind::IsolationForest);
    let share = m.flagged_share.unwrap();
    assert!((0.02..=0.08).contains(&share), "{share}");
    let p = predict(&model, &[40.0, 500.0, 1.0, 15.0]).unwrap();
    assert_eq!(p[0].label, "anomaly");
    assert_eq!(p[1].label, "normal");
    let top = p[0]
        .explanation
        .as_ref()
        .unwrap()
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap();
    assert!(["events", "errors"].contains(&top.0.as_str()));

    // NDJSON works too.
    let lines: String = rows.iter().map(|r| r.to_string() + "\n").collect();
    let again = parse(
        lines.as_bytes(),
        Format::Json,
        Label::Auto,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(again.rows, 500);
}

#[test]
fn incomplete_rows_are_dropped_and_counted() {
    let mut csv = labelled_csv(100, 3);
    csv.push_str(",1,443,benign,h\n");
    csv.push_str("12.5,1,443,,h\n");
    csv.push_str("NaN,1,443,benign,h\n");
    let data = parse(csv.as_bytes(), Format::Csv, Label::Auto, &Limits::default()).unwrap();
    assert_eq!((data.rows, data.dropped_rows), (100, 3));
}

#[test]
fn bad_uploads_are_clear_errors() {
    let limits = Limits::default();
    let err = |bytes: &[u8], format, label| match parse(bytes, format, label, &limits) {
        Err(TrainingError::Invalid(m)) => m,
        other => panic!("expected an error, got {other:?}"),
    };
    assert!(err(b"a,b\n\xff\xfe,1\n", Format::Csv, Label::Auto).contains("UTF-8"));
    assert!(err(b"name,host\nx,y\n", Format::Csv, Label::Auto).contains("no numeric feature"));
    assert!(err(b"a,b\n1,2\n3,4\n", Format::Csv, Label::Auto).contains("at least 20"));
    assert!(
        err(
            labelled_csv(50, 4).as_bytes(),
            Format::Csv,
            Label::Column("class"),
        )
        .contains("label column \"class\"")
    );
    assert!(err(b"{\"a\": 1", Format::Json, Label::Auto).contains("cannot parse"));
    let one_class: String = std::iter::once("x,label\n".to_string())
        .chain((0..30).map(|i| format!("{i},ok\n")))
        .collect();
    assert!(err(one_class.as_bytes(), Format::Csv, Label::Auto).contains("single class"));
    let small = Limits {
        max_rows: 10,
        ..Limits::default()
    };
    assert!(matches!(
        parse(labelled_csv(50, 5).as_bytes(), Format::Csv, Label::Auto, &small),
        Err(TrainingError::Invalid(m)) if m.contains("over the limit")
    ));
    // A random forest needs labels.
    let mut csv = String::from("a,b\n");
    for i in 0..40 {
        csv.push_str(&format!("{i},{}\n", i * 2));
    }
    let data = parse(csv.as_bytes(), Format::Csv, Label::Auto, &limits).unwrap();
    let params = TrainParams {
        kind: Some(ModelKind::RandomForest),
        ..TrainParams::default()
    };
    assert!(matches!(
        train(&data, &params),
        Err(TrainingError::Invalid(_))
    ));
    assert!(predict(&train(&data, &TrainParams::default()).unwrap().0, &[1.0]).is_err());
}

/// An answer-like column is never silently a feature: named, it is the
/// label; declared absent, it is a feature; otherwise the upload is refused.
#[test]
fn a_label_like_column_must_be_named_or_declared() {
    let mut csv = String::from("bytes,port,anomaly\n");
    for i in 0..60 {
        csv.push_str(&format!(
            "{},{},{}\n",
            100 + i,
            22 + i % 3,
            i32::from(i % 10 == 0)
        ));
    }
    match parse(csv.as_bytes(), Format::Csv, Label::Auto, &Limits::default()) {
        Err(TrainingError::Invalid(m)) => {
            assert!(m.contains("\"anomaly\" looks like a label"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let named = parse(
        csv.as_bytes(),
        Format::Csv,
        Label::Column("anomaly"),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(named.features, ["bytes", "port"]);
    assert_eq!(named.label_column.as_deref(), Some("anomaly"));
    let none = parse(
        csv.as_bytes(),
        Format::Csv,
        Label::Unlabelled,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(none.features, ["bytes", "port", "anomaly"]);
    assert_eq!(none.label_column, None);
}

/// Found by fuzzing: a number beyond i64 made polars panic (Int128 was not
/// a supported type). Now it is a feature like any other, or a clear error.
#[test]
fn numbers_beyond_64_bits_are_data_not_a_crash() {
    let mut rows = vec![r#"{"a": 123456789012345678901234567890, "b": 1.5}"#.to_string()];
    rows.extend((0..30).map(|i| format!(r#"{{"a": {i}, "b": {i}.5}}"#)));
    let json = format!("[{}]", rows.join(","));
    let data = parse(
        json.as_bytes(),
        Format::Json,
        Label::Unlabelled,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(data.features, ["a", "b"]);
    assert_eq!(data.rows, 31);
    let csv = b"\n\n6666666666666666666666666666\n";
    assert!(parse(csv, Format::Csv, Label::Unlabelled, &Limits::default()).is_err());
    let ndjson = b"{\"x\": 66666666666666666666666666666666666}\n{\"x\": -1}\n";
    let err = parse(ndjson, Format::Json, Label::Unlabelled, &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("usable rows"), "{err}");
}

/// Found by `scripts/fuzz.sh`: polars 0.55's CSV reader panics (in its
/// thread pool) on a quoted field left open at the end of the upload.
#[test]
fn an_unterminated_quote_is_a_clear_error_not_a_crash() {
    for csv in [
        &b",=,,3\n1a\"=,,3\n1a\",<,\""[..],
        b"a,b\n1,2\n3,\"",
        b"a,b\n1,\"2\n",
        // Third finding: an even count, a quote inside a field and one left open.
        b"a,,b\n1,2\"laB\x7f,x\n\"",
    ] {
        let err = parse(csv, Format::Csv, Label::Auto, &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("quote"), "{err}");
    }
    // Quotes that open and close (doubled inside) are data.
    let mut csv = String::from("a,b,\"say \"\"hi\"\", x\"\n");
    for i in 0..25 {
        csv.push_str(&format!("\"{i}\",{i}.5,\"a,\"\"b\"\n"));
    }
    let ok = parse(
        csv.as_bytes(),
        Format::Csv,
        Label::Unlabelled,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(ok.rows, 25);
}

//! examples/*.yaml: every document is a valid AITBC resource: it matches the generated CRD's
//! openAPIV3Schema (types, enums, patterns, required fields, bounds), passes the CEL rules, and
//! deserializes into the Rust types the operator uses.

use aitbc_crds::{AiJob, Bid, Node, ServiceListing, Wallet};
use kube::core::cel::Validator;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn schema_for(kind: &str) -> Value {
    let crd = aitbc_crds::gen::crds()
        .into_iter()
        .map(|(_, c)| c)
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD of kind {kind}"));
    aitbc_crds::gen::schema_json(&crd).expect("CRD has a schema")
}

/// Errors of one document against its kind's schema, CEL rules and Rust type.
fn check(doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    if doc["apiVersion"] != "aitbc.io/v1alpha1" {
        errors.push(format!(
            "apiVersion {} is not aitbc.io/v1alpha1",
            doc["apiVersion"]
        ));
    }
    let schema = schema_for(&kind);
    match jsonschema::validator_for(&schema) {
        Ok(v) => errors.extend(
            v.iter_errors(doc)
                .map(|e| format!("{}: {e}", e.instance_path())),
        ),
        Err(e) => errors.push(format!("schema of {kind} does not compile: {e}")),
    }
    if let Err(e) = Validator::new().validate(&schema, doc, None) {
        errors.push(format!("CEL: {e:?}"));
    }
    let typed = match kind.as_str() {
        "Node" => Node::deserialize(doc).map(|_| ()),
        "Wallet" => Wallet::deserialize(doc).map(|_| ()),
        "ServiceListing" => ServiceListing::deserialize(doc).map(|_| ()),
        "Bid" => Bid::deserialize(doc).map(|_| ()),
        "AIJob" => AiJob::deserialize(doc).map(|_| ()),
        other => {
            errors.push(format!("unknown kind {other}"));
            Ok(())
        }
    };
    if let Err(e) = typed {
        errors.push(format!("does not deserialize: {e}"));
    }
    errors
}

fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(examples_dir().join(file))
        .unwrap_or_else(|e| panic!("cannot read examples/{file}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v = serde_yaml::Value::deserialize(d)
                .unwrap_or_else(|e| panic!("examples/{file} is not YAML: {e}"));
            serde_json::to_value(v).expect("YAML maps to JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn assert_valid(file: &str, kinds: &[&str]) {
    let docs = documents(file);
    for doc in &docs {
        let errors = check(doc);
        assert!(
            errors.is_empty(),
            "examples/{file} {} {}: {errors:#?}",
            doc["kind"],
            doc["metadata"]["name"]
        );
    }
    for kind in kinds {
        assert!(
            docs.iter().any(|d| d["kind"] == *kind),
            "examples/{file} has a {kind}"
        );
    }
}

#[test]
fn ai_image_generation_is_valid() {
    assert_valid(
        "ai-image-generation.yaml",
        &["Node", "Wallet", "ServiceListing", "AIJob"],
    );
}

#[test]
fn gpu_rental_training_is_valid() {
    assert_valid(
        "gpu-rental-training.yaml",
        &["Wallet", "ServiceListing", "Bid", "AIJob"],
    );
}

#[test]
fn multi_service_pipeline_is_valid() {
    assert_valid(
        "multi-service-pipeline.yaml",
        &["Wallet", "ServiceListing", "AIJob"],
    );
}

#[test]
fn every_example_file_is_covered() {
    let mut names: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("examples/ exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ai-image-generation.yaml",
            "gpu-rental-training.yaml",
            "multi-service-pipeline.yaml"
        ]
    );
}

/// The checks have teeth: bad enums, patterns, missing fields and CEL violations are caught.
#[test]
fn invalid_resources_are_refused() {
    let bad = |yaml: &str| -> Vec<String> {
        check(
            &serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(yaml).unwrap())
                .unwrap(),
        )
    };
    let base = "apiVersion: aitbc.io/v1alpha1\nmetadata: {name: x}\n";
    assert!(!bad(&format!(
        "{base}kind: ServiceListing\nspec: {{wallet: w, name: n, type: quantum, price: '1'}}"
    ))
    .is_empty());
    assert!(!bad(&format!("{base}kind: ServiceListing\nspec: {{wallet: w, name: n, type: ai-inference, price: '1.1234567'}}")).is_empty());
    assert!(
        !bad(&format!(
            "{base}kind: Bid\nspec: {{wallet: w, amount: '1'}}"
        ))
        .is_empty(),
        "a bid needs a listing (CEL)"
    );
    assert!(
        !bad(&format!(
            "{base}kind: Bid\nspec: {{listing: l, amount: '1'}}"
        ))
        .is_empty(),
        "a bid needs a wallet"
    );
    assert!(
        !bad(&format!(
            "{base}kind: AIJob\nspec: {{wallet: w, type: inference}}"
        ))
        .is_empty(),
        "payment or bid (CEL)"
    );
    assert!(!bad(&format!(
        "{base}kind: AIJob\nspec: {{wallet: w, payment: '1', timeLimitSeconds: 0}}"
    ))
    .is_empty());
    assert!(
        !bad(&format!(
            "{base}kind: Node\nspec: {{validators: 4, replicas: 2}}"
        ))
        .is_empty(),
        "replicas >= validators (CEL)"
    );
    assert!(!bad(&format!("{base}kind: Node\nspec: {{validators: 0}}")).is_empty());
    assert!(bad(&format!(
        "{base}kind: Node\nspec: {{validators: 4, replicas: 5}}"
    ))
    .is_empty());
    assert!(bad(&format!("{base}kind: AIJob\nspec: {{wallet: w, bid: b}}")).is_empty());
}

//! The CRD YAML committed in charts/aitbc/crds/ must be exactly what the Rust types generate.

use std::path::PathBuf;

#[test]
fn committed_crd_yaml_matches_the_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/aitbc/crds");
    let mut stale = Vec::new();
    for (name, yaml) in aitbc_crds::gen::files().expect("CRDs serialize to YAML") {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        if committed != yaml {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "charts/aitbc/crds/{stale:?} differ from the types in crds/src; run `cargo run -p aitbc-crds --bin crdgen` and commit the result"
    );
}

#[test]
fn every_kind_has_status_short_names_and_printer_columns() {
    for (name, crd) in aitbc_crds::gen::crds() {
        assert_eq!(crd.spec.group, "aitbc.io", "{name}");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{name} has a status subresource"
        );
        assert!(
            v.additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 3),
            "{name} has printer columns"
        );
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "{name} has short names"
        );
    }
}

#[test]
fn node_short_name_does_not_hide_core_nodes_and_aijob_has_the_requested_columns() {
    let crds = aitbc_crds::gen::crds();
    let node = &crds[0].1;
    let shorts = node.spec.names.short_names.clone().unwrap_or_default();
    assert!(shorts.contains(&"chainnode".to_string()));
    assert!(!shorts
        .iter()
        .any(|s| s == "no" || s == "node" || s == "nodes"));
    let cols = |i: usize| -> Vec<String> {
        crds[i].1.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect()
    };
    assert_eq!(cols(4), ["PHASE", "AGENT", "PAYMENT", "JOB-ID", "AGE"]);
    assert_eq!(&cols(0)[..3], ["REPLICAS", "READY", "HEIGHT"]);
}

//! Config validation: each problem names its field and the fix.

use super::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml", &repo())
}

const GOOD: &str = r#"
    [[models]]
    name = "fraud_classifier"
    versions = [1, 2]
    [[endpoints]]
    name = "fraud"
    served_entities = [{ name = "a", entity_name = "fraud_classifier", entity_version = "1" },
                       { name = "b", entity_name = "fraud_classifier", entity_version = 2 }]
    traffic_config = { routes = [{ served_model_name = "a", traffic_percentage = 90 },
                                 { served_model_name = "b", traffic_percentage = 10 }] }
"#;

#[test]
fn good_config_validates_with_defaults() {
    let c = check(GOOD).unwrap();
    assert_eq!(c.server.http_addr.port(), 8000);
    assert_eq!(c.server.grpc_addr.port(), 8001);
    assert_eq!(c.server.admin_addr.to_string(), "127.0.0.1:8002");
    assert_eq!(c.server.max_body_bytes, 16 * 1024 * 1024);
    assert_eq!(c.server.default_endpoint.as_deref(), Some("fraud"));
    assert_eq!(c.endpoints[0].routes[1].traffic_percentage, 10);
    assert_eq!(c.endpoints[0].served_entities[1].version, 2);
}

fn issues_of(text: &str) -> Vec<ConfigIssue> {
    match check(text) {
        Err(ConfigError::Invalid { issues, .. }) => issues,
        other => panic!("expected invalid config, got {other:?}"),
    }
}

#[test]
fn each_problem_names_its_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"[[models]]
            name = "fraud_classifier"
            versions = [9]"#,
            "models[0].versions",
            "no model file",
        ),
        (
            r#"[[models]]
            name = "fraud_classifier"
            versions = [1]
            provider = "tpu""#,
            "models[0].provider",
            "\"cpu\" or \"cuda\"",
        ),
        (
            r#"[[models]]
            name = "fraud_classifier"
            versions = [1]
            batching = { max_batch_size = 0 }"#,
            "models[0].batching.max_batch_size",
            "out of range",
        ),
        (
            r#"[server]
            http_addr = "localhost"
            [[models]]
            name = "mlp"
            versions = [1]"#,
            "server.http_addr",
            "IP:PORT",
        ),
        (
            &GOOD.replace("traffic_percentage = 10", "traffic_percentage = 20"),
            "endpoints[0].traffic_config.routes",
            "sum to 110",
        ),
        (
            &GOOD.replace("served_model_name = \"b\"", "served_model_name = \"c\""),
            "endpoints[0].traffic_config.routes[1].served_model_name",
            "not a served entity",
        ),
        (
            &GOOD.replace("entity_version = 2", "entity_version = 9"),
            "endpoints[0].served_entities[1].entity_version",
            "no model file",
        ),
        (&GOOD.replace("name = \"b\"", "name = \"a\""), "endpoints[0].served_entities[1].name", "appears twice"),
        (&format!("{GOOD}\n[server]\ndefault_endpoint = \"nope\""), "server.default_endpoint", "not defined"),
    ];
    for (text, field, needle) in cases {
        let issues = issues_of(text);
        assert!(
            issues.iter().any(|i| i.field == *field && i.message.contains(needle)),
            "expected {field} / {needle}, got {issues:?}"
        );
    }
}

#[test]
fn unknown_keys_and_bad_toml_are_parse_errors() {
    let err = check("[server]\nhttp_port = 1\n").unwrap_err().to_string();
    assert!(err.contains("http_port"), "{err}");
    assert!(check("[[models]\n").is_err());
}

#[test]
fn endpoint_traffic_shadow_and_sticky_problems() {
    let ep = |extra: &str| {
        format!(
            r#"
            [[models]]
            name = "fraud_classifier"
            versions = [1, 2]
            [[endpoints]]
            name = "e"
            served_entities = [{{ name = "a", entity_name = "fraud_classifier", entity_version = 1 }},
                               {{ name = "b", entity_name = "fraud_classifier", entity_version = 2 }},
                               {{ name = "s", entity_name = "fraud_classifier", entity_version = 2 }}]
            {extra}
            "#
        )
    };
    let routes = r#"traffic_config = { routes = [{ served_model_name = "a", traffic_percentage = 90 },
                                                 { served_model_name = "b", traffic_percentage = 10 }] }"#;
    let good = ep(&format!("{routes}\nshadow = [{{ served_model_name = \"s\", mirror_percent = 50 }}]"));
    let c = check(&good).unwrap();
    assert_eq!(c.endpoints[0].shadows[0].mirror_percent, 50);
    let cases: Vec<(String, &str, &str)> = vec![
        (ep(&routes.replace("= 10", "= 9")), "endpoints[0].traffic_config.routes", "sum to 99"),
        (
            ep(&format!("{routes}\nshadow = [{{ served_model_name = \"b\", mirror_percent = 50 }}]")),
            "endpoints[0].shadow[0].served_model_name",
            "also a traffic route",
        ),
        (
            ep(&format!("{routes}\nshadow = [{{ served_model_name = \"zz\", mirror_percent = 50 }}]")),
            "endpoints[0].shadow[0].served_model_name",
            "not a served entity",
        ),
        (
            ep(&format!("{routes}\nshadow = [{{ served_model_name = \"s\", mirror_percent = 150 }}]")),
            "endpoints[0].shadow[0].mirror_percent",
            "not a percentage",
        ),
        (ep(routes), "endpoints[0].served_entities", "'s' has no traffic route"),
        (
            ep(&format!(
                "{routes}\nshadow = [{{ served_model_name = \"s\", mirror_percent = 5 }}]\nsticky_key = {{ header = \"x\", field = \"y\" }}"
            )),
            "endpoints[0].sticky_key",
            "exactly one",
        ),
    ];
    for (text, field, needle) in cases {
        let issues = issues_of(&text);
        assert!(
            issues.iter().any(|i| i.field == field && i.message.contains(needle)),
            "expected {field} / {needle}, got {issues:?}"
        );
    }
}

#[test]
fn served_entities_load_versions_not_in_models_with_their_options() {
    let text = r#"
        [[models]]
        name = "fraud_classifier"
        versions = [1]
        instances = 2
        [[endpoints]]
        name = "e"
        served_entities = [{ name = "a", entity_name = "fraud_classifier", entity_version = 1 },
                           { name = "b", entity_name = "fraud_classifier", entity_version = 2, queue_capacity = 7 },
                           { name = "m", entity_name = "mlp", entity_version = 1 }]
        traffic_config = { routes = [{ served_model_name = "a", traffic_percentage = 50 },
                                     { served_model_name = "b", traffic_percentage = 50 },
                                     { served_model_name = "m", traffic_percentage = 0 }] }
    "#;
    let c = check(text).unwrap();
    let v2 = &c.versions[&("fraud_classifier".to_string(), 2)];
    assert_eq!(v2.queue_capacity, 7);
    assert_eq!(v2.execution.instances, 2, "model options apply under entity options");
    assert!(c.versions.contains_key(&("mlp".to_string(), 1)));
    // conflicting entity options for one version
    let bad = text.replace("entity_version = 1 }]", "entity_version = 1 }, { name = \"c\", entity_name = \"fraud_classifier\", entity_version = 2, queue_capacity = 8 }]");
    let bad = bad.replace(
        "traffic_percentage = 0 }",
        "traffic_percentage = 0 }, { served_model_name = \"c\", traffic_percentage = 0 }",
    );
    let issues = issues_of(&bad);
    assert!(issues.iter().any(|i| i.message.contains("different execution options")), "{issues:?}");
    // a version with no file
    let issues = issues_of(&text.replace("entity_version = 2,", "entity_version = 9,"));
    assert!(issues.iter().any(|i| i.message.contains("no model file")), "{issues:?}");
}

#[test]
fn non_loopback_admin_needs_a_token() {
    let text = "[server]\nadmin_addr = \"0.0.0.0:8002\"\n[[models]]\nname = \"mlp\"\nversions = [1]\n";
    let issues = issues_of(text);
    assert!(
        issues.iter().any(|i| i.field == "server.admin_token" && i.message.contains("not a loopback")),
        "{issues:?}"
    );
    let with = text.replace("[[models]]", "admin_token = \"0123456789abcdef0123\"\n[[models]]");
    let c = check(&with).unwrap();
    assert!(format!("{:?}", c.server.admin_token).contains("***"), "token is redacted in Debug");
    let short = text.replace("[[models]]", "admin_token = \"short\"\n[[models]]");
    assert!(issues_of(&short).iter().any(|i| i.message.contains("shorter than 16")));
}

#[test]
fn queue_byte_budgets_default_and_are_range_checked() {
    let with = |extra: &str| GOOD.replace("traffic_config", &format!("{extra}\n    traffic_config"));
    let c = check(&with("inference_table = { enabled = true }")).unwrap();
    assert_eq!(c.endpoints[0].shadow_queue_max_bytes, 64 << 20);
    assert_eq!(c.endpoints[0].table.as_ref().unwrap().queue_max_bytes, 256 << 20);
    let c = check(&with("shadow_queue_max_bytes = 1000\ninference_table = { queue_max_bytes = 2000 }")).unwrap();
    assert_eq!(c.endpoints[0].shadow_queue_max_bytes, 1000);
    assert_eq!(c.endpoints[0].table.as_ref().unwrap().queue_max_bytes, 2000);
    let issues = issues_of(&with("shadow_queue_max_bytes = 0\ninference_table = { queue_max_bytes = 0 }"));
    for field in ["endpoints[0].shadow_queue_max_bytes", "endpoints[0].inference_table.queue_max_bytes"] {
        assert!(issues.iter().any(|i| i.field == field && i.message.contains("out of range")), "{field}: {issues:?}");
    }
}

#[test]
fn storage_puts_tables_in_s3_with_a_local_cache_and_checks_its_settings() {
    let with_table = GOOD.replace(
        "traffic_config = { routes = [{ served_model_name = \"a\", traffic_percentage = 90 },",
        "inference_table = { retention_days = 7 }\n    traffic_config = { routes = [{ served_model_name = \"a\", traffic_percentage = 90 },",
    );
    // default: local tables under data_dir
    let c = check(&with_table).unwrap();
    assert_eq!(c.storage.remote, None);
    let t = c.endpoints[0].table.as_ref().unwrap();
    assert_eq!(t.dir, repo().join("data/fraud"));
    assert_eq!(t.location(), sluice_tables::Location::Local(repo().join("data/fraud")));
    assert_eq!(t.retention_days, Some(7));

    let s3 = format!(
        "{with_table}\n[storage]\ntables = \"s3://lake/sluice\"\nendpoint = \"http://127.0.0.1:8333\"\nallow_http = true\n"
    );
    let c = check(&s3).unwrap();
    let t = c.endpoints[0].table.as_ref().unwrap();
    assert_eq!(t.location().to_string(), "s3://lake/sluice/fraud");
    assert_eq!(t.labels_location().to_string(), "s3://lake/sluice/fraud_labels");
    assert_eq!(t.dir, repo().join("data/_table_cache/fraud"), "readers' copies");
    match t.location() {
        sluice_tables::Location::S3 { options, .. } => {
            assert_eq!(options.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
            assert!(options.allow_http);
            assert_eq!(options.secret_access_key, None, "credentials come from the environment only");
        }
        other => panic!("{other:?}"),
    }

    let field_of = |extra: &str| -> Vec<String> {
        issues_of(&format!("{with_table}\n[storage]\n{extra}\n")).into_iter().map(|i| i.field).collect()
    };
    assert_eq!(field_of("tables = \"s3://lake\"\nendpoint = \"http://127.0.0.1:8333\""), ["storage.endpoint"]);
    assert_eq!(field_of("tables = \"s3://Bad_Bucket/x\""), ["storage.tables"]);
    assert_eq!(field_of("tables = \"gs://lake/x\""), ["storage.tables"]);
    assert_eq!(field_of("endpoint = \"https://s3.example\""), ["storage.tables"]);
    assert_eq!(field_of("tables = \"/var/tables\"\nregion = \"eu-west-1\""), ["storage.tables"]);
    assert_eq!(field_of("tables = \"s3://lake\"\nendpoint = \"ftp://x\""), ["storage.endpoint"]);
    assert!(check(&format!("{with_table}\n[storage]\ntables = \"s3://lake\"\nsecret_access_key = \"x\"\n")).is_err());

    // the config store: local tables with an s3:// store takes the S3 settings; a local store
    // does not
    let c = check(&format!(
        "{with_table}\n[storage]\nconfig_store = \"s3://lake/sluice\"\nendpoint = \"http://127.0.0.1:8333\"\nallow_http = true\n"
    ))
    .unwrap();
    assert_eq!(c.storage.remote, None);
    match c.storage.config_store {
        Some(sluice_tables::Location::S3 { bucket, prefix, options }) => {
            assert_eq!((bucket.as_str(), prefix.as_str()), ("lake", "sluice"));
            assert_eq!(options.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        }
        other => panic!("{other:?}"),
    }
    let c = check(&format!("{with_table}\n[storage]\nconfig_store = \"fleet\"\n")).unwrap();
    assert_eq!(c.storage.config_store, Some(sluice_tables::Location::Local(repo().join("fleet"))));
    assert_eq!(field_of("config_store = \"s3://Bad_Bucket\""), ["storage.config_store"]);
    assert_eq!(field_of("config_store = \"fleet\"\nregion = \"eu-west-1\""), ["storage.config_store"]);
    assert_eq!(field_of("config_store = \"gs://x/y\""), ["storage.config_store"]);
}

/// Models in object storage: copied into `<data_dir>/_model_cache` (their files are checked then,
/// not at validation), reached with the `[storage]` S3 settings.
#[test]
fn a_model_repository_in_s3_is_cached_under_the_data_dir() {
    let text = "[runtime]\nmodel_repository = \"s3://models-bucket/prod\"\n[storage]\nendpoint = \"http://127.0.0.1:8333\"\n\
                allow_http = true\n[[models]]\nname = \"not_in_the_local_repo\"\nversions = [7]\n";
    let c = check(text).unwrap();
    assert_eq!(c.runtime.model_repository, repo().join("data/_model_cache"));
    match &c.runtime.model_store {
        Some(sluice_tables::Location::S3 { bucket, prefix, options }) => {
            assert_eq!((bucket.as_str(), prefix.as_str()), ("models-bucket", "prod"));
            assert_eq!(options.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        }
        other => panic!("{other:?}"),
    }
    let issues =
        issues_of("[runtime]\nmodel_repository = \"s3://Bad_Bucket\"\n[[models]]\nname = \"m\"\nversions = [1]\n");
    assert!(issues.iter().any(|i| i.field == "runtime.model_repository"), "{issues:?}");
}

/// A config with thousands of mistakes gets the first hundred, and a count of the rest: the
/// messages never cost more than a bounded list.
#[test]
fn issues_past_the_first_hundred_are_counted() {
    let bad: String = (0..500).map(|i| format!("[[models]]\nname = \"bad name {i}\"\nversions = [1]\n")).collect();
    let issues = issues_of(&bad);
    assert_eq!(issues.len(), 101, "{:?}", issues.last());
    let last = issues.last().unwrap();
    assert!(last.field == "(more)" && last.message.starts_with("4"), "{last:?}");
}

/// Models from an MLflow registry: aliases stay unresolved (and unserved) until the registry is
/// asked; a resolved version is the version served; each misuse is named by field.
#[test]
fn mlflow_aliases_need_a_registry_and_resolve_to_the_version_served() {
    let registry = "[runtime]\nregistry_uri = \"http://127.0.0.1:5000/\"\nregistry_poll_ms = 500\n";
    let ep = |extra: &str| {
        format!(
            "{registry}[[endpoints]]\nname = \"fraud\"\n{extra}\n[[endpoints.served_entities]]\n\
             entity_name = \"fraud_classifier\"\nentity_version = \"@champion\"\n"
        )
    };
    let c = check(&ep("")).unwrap();
    assert_eq!(c.runtime.registry.as_ref().unwrap().uri, "http://127.0.0.1:5000");
    assert_eq!(c.runtime.registry.as_ref().unwrap().poll, Duration::from_millis(500));
    assert_eq!(c.runtime.model_repository, repo().join("data/_model_cache"));
    assert_eq!(c.unresolved, ["fraud/fraud_classifier-champion"]);
    assert!(c.versions.is_empty(), "an unresolved alias loads nothing");
    let s = &c.endpoints[0].served_entities[0];
    assert_eq!((s.name.as_str(), s.alias.as_deref()), ("fraud_classifier-champion", Some("champion")));
    // resolved: that version is loaded and served
    let c = check(&format!("{}resolved_version = 4\n", ep("watch_aliases = true"))).unwrap();
    assert!(c.unresolved.is_empty());
    assert_eq!(c.endpoints[0].served_entities[0].version, 4);
    assert!(c.versions.contains_key(&("fraud_classifier".to_string(), 4)));
    assert!(c.endpoints[0].watch_aliases);
    // numeric versions of a registry model are not checked against a local repository
    check(&format!("{registry}[[models]]\nname = \"only_in_the_registry\"\nversions = [3]\n")).unwrap();
    let fields = |text: &str| -> Vec<String> { issues_of(text).into_iter().map(|i| i.field).collect() };
    let alias_only = "[[endpoints]]\nname = \"e\"\nserved_entities = [{ entity_name = \"fraud_classifier\", entity_version = \"@champion\" }]\n";
    assert_eq!(fields(alias_only), ["endpoints[0].served_entities[0].entity_version"]);
    assert_eq!(fields(&ep("").replace("@champion", "@no way"))[0], "endpoints[0].served_entities[0].entity_version");
    assert_eq!(
        fields(&format!("{}resolved_version = 0\n", ep(""))),
        ["endpoints[0].served_entities[0].resolved_version"]
    );
    assert_eq!(
        fields(&format!("{}resolved_version = 2\n", ep("").replace("\"@champion\"", "1"))),
        ["endpoints[0].served_entities[0].resolved_version"]
    );
    assert_eq!(fields(&ep("watch_aliases = true").replace("\"@champion\"", "1")), ["endpoints[0].watch_aliases"]);
    assert_eq!(
        fields(&ep("watch_aliases = true\nalias_rollout = { steps = [50], interval = \"5m\" }")),
        ["endpoints[0].alias_rollout"],
        "a rollout needs the inference table"
    );
    assert!(
        fields(&ep("watch_aliases = true\ninference_table = { enabled = true }\nalias_rollout = { steps = [50, 5], interval = \"soon\" }"))
            .iter()
            .all(|f| f.starts_with("endpoints[0].alias_rollout")),
    );
    for bad in ["ftp://h", "http://h:5000/api", "not a url", "http://h?x=1"] {
        assert_eq!(fields(&ep("").replace("http://127.0.0.1:5000/", bad)), ["runtime.registry_uri"], "{bad}");
    }
    assert_eq!(
        fields(&ep("").replace("[runtime]\n", "[runtime]\nmodel_repository = \"s3://bucket/m\"\n")),
        ["runtime.registry_uri"]
    );
    assert_eq!(
        fields("[runtime]\nregistry_poll_ms = 5\n[[models]]\nname = \"fraud_classifier\"\nversions = [1]\n"),
        ["runtime.registry_poll_ms"]
    );
}

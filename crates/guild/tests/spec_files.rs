//! Loading guild specs from TOML and JSON, and the errors bad specs get.

use guild::{
    Agent, AgentContext, AgentRegistry, AgentResult, KnownNames, LoadedSpec, Message, SpecErrors,
    SpecFormat,
};

struct Nothing;

impl Agent for Nothing {
    async fn handle(&mut self, _: &AgentContext, _: &Message) -> AgentResult {
        Ok(())
    }
}

fn registry() -> AgentRegistry {
    let mut registry = AgentRegistry::new();
    registry.register("worker", |_| Ok(Nothing));
    registry
}

fn known() -> KnownNames {
    KnownNames {
        engines: vec!["sync".into(), "threads".into()],
        messaging: vec!["memory".into()],
        default_engine: "threads".into(),
        enforcing_limits: Vec::new(),
        check_messaging: None,
        queue_limits: vec!["memory".into()],
    }
}

/// Parses and checks `source`, returning every error as displayed.
fn check(source: &str, format: SpecFormat) -> Result<LoadedSpec, Vec<String>> {
    let name = match format {
        SpecFormat::Toml => "guild.toml",
        SpecFormat::Json => "guild.json",
    };
    let shown = |errors: SpecErrors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>();
    let loaded = LoadedSpec::parse(name, source.to_owned(), format).map_err(shown)?;
    loaded.check(&registry(), &known()).map_err(shown)?;
    Ok(loaded)
}

const GOOD: &str = r#"
id = "g"
engine = "sync"

[[agents]]
id = "w"
type = "worker"
replicas = 3
topics = ["jobs"]
properties = { depth = 2 }

[run]
send = [{ topic = "jobs", payload = { n = 1 } }]
until = { topic = "done", count = 2 }
"#;

#[test]
fn a_good_toml_spec_loads_with_replicas_expanded() {
    let loaded = check(GOOD, SpecFormat::Toml).expect("a good spec");
    let ids: Vec<_> = loaded
        .spec
        .expanded_agents()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, ["w-1", "w-2", "w-3"]);
    let first = &loaded.spec.expanded_agents()[0];
    assert_eq!(first.name, "w", "copies share the name");
    assert_eq!(first.properties["depth"], 2);
    assert_eq!(loaded.spec.run.until.count, 2);
}

#[test]
fn the_same_spec_loads_from_json() {
    let json = r#"{
        "id": "g",
        "agents": [{ "id": "w", "type": "worker", "topics": ["jobs"] }],
        "run": { "send": [{ "topic": "jobs" }] }
    }"#;
    let loaded = check(json, SpecFormat::Json).expect("a good spec");
    assert_eq!(loaded.spec.agents[0].topics, ["jobs"]);
}

#[test]
fn a_misspelt_field_names_the_file_line_and_field() {
    let typo = GOOD.replace("topics = [\"jobs\"]", "topcs = [\"jobs\"]");
    let errors = check(&typo, SpecFormat::Toml).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("guild.toml:9:1: agents[0].topcs: unknown field `topcs`"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_wrong_type_names_the_line_and_field_in_json() {
    let json = "{\n  \"id\": \"g\",\n  \"agents\": [{ \"id\": \"w\", \"type\": \"worker\", \"replicas\": \"two\" }]\n}";
    let errors = check(json, SpecFormat::Json).unwrap_err();
    assert!(errors[0].starts_with("guild.json:3:"), "{}", errors[0]);
    assert!(
        errors[0].contains("agents[0].replicas: invalid type: string \"two\""),
        "{}",
        errors[0]
    );
}

#[test]
fn malformed_toml_is_reported_with_its_position() {
    let errors = check("id = \"g\"\n[[agents]\n", SpecFormat::Toml).unwrap_err();
    assert!(errors[0].starts_with("guild.toml:2:"), "{}", errors[0]);
}

#[test]
fn every_problem_of_a_spec_is_reported_with_its_line() {
    let spec = r#"
id = "g"
engine = "warp"

[[agents]]
id = "a"
type = "worker"
topics = ["t"]

[[agents]]
id = "a"
type = "wrker"
dependencies = ["db"]

[run]
send = [{ topic = "nowhere" }]
"#;
    let errors = check(spec, SpecFormat::Toml).unwrap_err();
    let expected = [
        "guild.toml:3:1: engine: unknown engine \"warp\"",
        "guild.toml:6:1: agents[1].id: duplicate agent id \"a\"",
        "guild.toml:12:1: agents[1].type: unknown agent type \"wrker\"",
        "guild.toml:13:1: agents[1].dependencies[0]: no guild dependency is named \"db\"",
        "guild.toml:16:11: run.send[0].topic: no agent subscribes to topic \"nowhere\"",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, expected) in errors.iter().zip(expected) {
        assert!(
            error.starts_with(expected),
            "{error}\ndoes not start with\n{expected}"
        );
    }
}

#[test]
fn a_file_with_an_unknown_extension_is_refused() {
    let errors = LoadedSpec::from_file("guild.yaml").unwrap_err();
    assert!(
        errors.to_string().contains("must end in .toml or .json"),
        "{errors}"
    );
}

use std::collections::HashMap;

use super::*;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

#[test]
fn built_in_providers_read_keys_and_base_urls_from_the_sdk_variables() {
    let config = CorralConfig::default();
    let vars = env(&[
        ("ANTHROPIC_API_KEY", "sk-a"),
        ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/"),
    ]);
    let settings = config.provider_settings("anthropic", None, &vars).unwrap();
    assert_eq!(settings.kind, ProviderKind::Anthropic);
    assert_eq!(settings.base_url, "http://127.0.0.1:9");
    assert_eq!(settings.api_key, Some(ApiKey::new("sk-a").unwrap()));
    assert_eq!(settings.resolve_model(None), "claude-sonnet-4-6");
    assert_eq!(settings.resolve_model(Some("haiku")), "claude-haiku-4-5");
    assert_eq!(settings.resolve_model(Some("claude-x")), "claude-x");
    assert!(settings.prompt_cache);

    let openai = config
        .provider_settings("openai", Some("haiku"), &env(&[("OPENAI_API_KEY", "sk-o")]))
        .unwrap();
    assert_eq!(openai.base_url, "https://api.openai.com/v1");
    assert_eq!(openai.resolve_model(None), "gpt-5-mini");

    let missing = config
        .provider_settings("openai", None, &env(&[]))
        .unwrap_err();
    assert!(
        missing.to_string().contains("set OPENAI_API_KEY"),
        "{missing}"
    );
    assert!(matches!(
        config.provider_settings("nope", None, &env(&[])),
        Err(ConfigError::UnknownProvider { .. })
    ));
}

#[test]
fn a_file_changes_built_ins_and_adds_local_servers() {
    let text = r#"
        default_provider = "local"

        [providers.anthropic]
        base_url = "https://gateway.example/anthropic"
        api_key_env = "MY_KEY"
        timeout = "90s"
        max_retries = 2
        [providers.anthropic.models]
        sonnet = "claude-sonnet-9"

        [providers.local]
        kind = "openai"
        base_url = "http://127.0.0.1:8080/v1"
        model = "qwen"
        structured_output = "response_format"
        max_tokens_field = "max_tokens"
        prompt_cache = false

        [prices.qwen]
        input = 0.0
        output = 0.0
    "#;
    let config = CorralConfig::parse(text, Path::new("corral.toml")).unwrap();
    assert_eq!(config.default_provider(), "local");
    let vars = env(&[("MY_KEY", "k"), ("ANTHROPIC_BASE_URL", "http://ignored")]);
    let anthropic = config.provider_settings("anthropic", None, &vars).unwrap();
    assert_eq!(anthropic.base_url, "https://gateway.example/anthropic");
    assert_eq!(anthropic.retry.request_timeout, Duration::from_secs(90));
    assert_eq!(anthropic.retry.max_retries, 2);
    assert_eq!(anthropic.resolve_model(None), "claude-sonnet-9");
    assert_eq!(anthropic.resolve_model(Some("opus")), "claude-opus-4-7");

    let local = config.provider_settings("local", None, &env(&[])).unwrap();
    assert_eq!(
        local.api_key, None,
        "a provider of your own needs no key unless it names one"
    );
    assert_eq!(local.structured_output, StructuredOutput::ResponseFormat);
    assert_eq!(local.max_tokens_field, MaxTokensField::MaxTokens);
    assert!(!local.prompt_cache);
    assert_eq!(local.resolve_model(None), "qwen");
    assert_eq!(
        config.price("qwen").unwrap().cost(&Usage {
            input_tokens: 5,
            ..Usage::default()
        }),
        0.0
    );
}

#[test]
fn mistakes_are_named() {
    let typo = CorralConfig::parse(
        "[providers.anthropic]\nbase_ulr = \"x\"\n",
        Path::new("corral.toml"),
    )
    .unwrap_err();
    assert!(typo.to_string().contains("base_ulr"), "{typo}");
    let config = CorralConfig::parse(
        "[providers.x]\nbase_url = \"http://h\"\n",
        Path::new("c.toml"),
    )
    .unwrap();
    let no_kind = config.provider_settings("x", None, &env(&[])).unwrap_err();
    assert!(no_kind.to_string().contains("set kind"), "{no_kind}");
    let config = CorralConfig::parse(
        "[providers.x]\nkind = \"openai\"\nbase_url = \"ftp://h\"\n",
        Path::new("c.toml"),
    )
    .unwrap();
    assert!(config.provider_settings("x", None, &env(&[])).is_err());
}

#[test]
fn prices_cost_cache_reads_and_writes_apart() {
    let price = CorralConfig::default().price("claude-sonnet-4-6").unwrap();
    let usage = Usage {
        input_tokens: 1_000_000,
        output_tokens: 0,
        cache_read_tokens: 1_000_000,
        cache_write_tokens: 1_000_000,
    };
    assert!((price.cost(&usage) - (3.0 + 0.3 + 3.75)).abs() < 1e-9);
}

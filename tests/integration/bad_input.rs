//! The bad-input matrix: every case runs the real binary and must exit 2 before touching the
//! cluster, with one line that names the field, the value and the fix.
//!
//! `KUBECONFIG=/nonexistent` makes any cluster contact fail differently (exit 1, "no
//! Kubernetes configuration"), so an exit 2 proves the input was refused before.

use super::common::{Scratch, run_bin};

struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// All of these must appear on one line of stderr.
    want: Vec<String>,
}

/// A valid configuration that each config case breaks in one place.
fn good(pw: &str, key: &str) -> String {
    format!(
        r#"registries:
  - name: ecr-main
    ecr: {{ region: us-east-1, accountId: "123456789012", roleArn: "arn:aws:iam::123456789012:role/pull" }}
  - name: gar
    google: {{ hosts: [gcr.io], keyFile: "{key}" }}
  - name: hub
    static:
      server: https://index.docker.io/v1/
      username: bot
      passwordFile: "{pw}"
secrets:
  - name: regcred
    registries: [ecr-main, gar, hub]
namespaces:
  include: ["team-*"]
  exclude: [kube-system]
  selector: "team in (a,b)"
serviceAccounts: [default]
"#
    )
}

#[tokio::test]
async fn every_bad_input_exits_2_before_the_cluster_naming_field_value_and_fix() {
    let s = Scratch::new().await;
    let pw = s.file("password", "pw-bad-input\n");
    let pw = pw.to_str().unwrap();
    let key = super::common::env("REGCRED_TEST_GOOGLE_KEY_FILE");
    let good = good(pw, &key);
    let dir = s.dir.to_str().unwrap().to_string();
    let user_cred = s
        .file(
            "adc.json",
            r#"{"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z"}"#,
        )
        .to_str()
        .unwrap()
        .to_string();
    let not_json = s
        .file("key.txt", "-----BEGIN PRIVATE KEY-----\n")
        .to_str()
        .unwrap()
        .to_string();
    let docker_config = |name: &str, key: &str| {
        let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "bot:pw");
        s.file(
            name,
            &format!(r#"{{"auths":{{"{key}":{{"auth":"{auth}"}}}}}}"#),
        )
        .to_str()
        .unwrap()
        .to_string()
    };
    let hub_alias = docker_config("hub-alias.json", "registry-1.docker.io");
    let userinfo_key = docker_config("userinfo.json", "https://bot:Us3rInf0-Pw@quay.io");
    let broken_key = {
        let mut k: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).unwrap();
        k["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into();
        s.file("broken-key.json", &k.to_string())
            .to_str()
            .unwrap()
            .to_string()
    };
    let static_login = format!(
        "      server: https://index.docker.io/v1/\n      username: bot\n      passwordFile: \"{pw}\"\n"
    );

    // The valid file runs into the cluster (exit 1): the matrix's baseline.
    let base = s.file("good.yaml", &good);
    let run = run_bin(
        &["--once", "--config", base.to_str().unwrap()],
        &[("KUBECONFIG", "/nonexistent")],
    )
    .await;
    assert_eq!(run.code, 1, "the good config must pass validation: {run:?}");
    assert!(
        run.stderr.contains("no Kubernetes configuration"),
        "{}",
        run.stderr
    );

    let mut n = 0;
    let mut cfg_case = |name: &'static str, yaml: String, want: &[&str]| {
        n += 1;
        let path = s.file(&format!("case-{n}.yaml"), &yaml);
        Case {
            name,
            args: vec![
                "--once".into(),
                "--config".into(),
                path.to_str().unwrap().into(),
            ],
            env: vec![],
            want: want.iter().map(|w| w.to_string()).collect(),
        }
    };
    let r = |from: &str, to: &str| {
        assert!(good.contains(from), "{from:?} not in the base config");
        good.replacen(from, to, 1)
    };

    let mut cases = vec![
        // ---- the file: syntax and types ----
        cfg_case(
            "empty config file",
            " \n".into(),
            &["the file is empty", "fix:"],
        ),
        cfg_case(
            "YAML syntax error",
            r("[ecr-main, gar, hub]", "[ecr-main, gar, hub"),
            &["secrets[0].registries", "line 14", "fix:"],
        ),
        cfg_case(
            "unknown top-level key with did-you-mean",
            r("serviceAccounts:", "serviceAcounts:"),
            &[
                "serviceAcounts",
                "unknown field",
                "did you mean `serviceAccounts`",
            ],
        ),
        cfg_case(
            "unknown nested key with did-you-mean",
            r("region: us-east-1", "regoin: us-east-1"),
            &[
                "registries[0].ecr.regoin",
                "unknown field `regoin`",
                "did you mean `region`",
            ],
        ),
        cfg_case(
            "string for a list",
            r("hosts: [gcr.io]", "hosts: gcr.io"),
            &[
                "registries[1].google.hosts",
                "expected a list",
                "\"gcr.io\"",
                "fix:",
            ],
        ),
        cfg_case(
            "number for a name",
            r("name: regcred", "name: 42"),
            &["secrets[0].name", "42 is read as a number", "fix: quote it"],
        ),
        cfg_case(
            "bool for a string",
            r("username: bot", "username: true"),
            &[
                "registries[2].static.username",
                "true is read as",
                "fix: quote it",
            ],
        ),
        cfg_case(
            "list for a string",
            r("selector: \"team in (a,b)\"", "selector: [a, b]"),
            &[
                "namespaces.selector",
                "expected a single string",
                "a list",
                "fix:",
            ],
        ),
        cfg_case(
            "bad boolean",
            r(
                "registries: [ecr-main, gar, hub]",
                "registries: [ecr-main, gar, hub]\n    adopt: sometimes",
            ),
            &[
                "secrets[0].adopt",
                "\"sometimes\"",
                "fix: use true or false",
            ],
        ),
        cfg_case(
            "inline password",
            r("passwordFile:", "password:"),
            &[
                "registries[2].static.password",
                "unknown field",
                "passwordFile",
            ],
        ),
        // ---- names and references ----
        cfg_case(
            "secret name breaks RFC 1123 (uppercase, underscore)",
            r("name: regcred", "name: Reg_Cred"),
            &["secrets[0].name", "\"Reg_Cred\"", "RFC 1123", "fix:"],
        ),
        cfg_case(
            "secret name breaks RFC 1123 (trailing dash)",
            r("name: regcred", "name: regcred-"),
            &["secrets[0].name", "\"regcred-\"", "fix:"],
        ),
        cfg_case(
            "registry name not a DNS label",
            r("name: gar", "name: g.a.r").replace("ecr-main, gar,", "ecr-main, g.a.r,"),
            &["registries[1].name", "\"g.a.r\"", "fix:"],
        ),
        cfg_case(
            "secret naming an undefined registry",
            r("[ecr-main, gar, hub]", "[ecr-mian, gar, hub]"),
            &[
                "secrets[0].registries[0]",
                "\"ecr-mian\" is not a defined registry",
                "did you mean \"ecr-main\"",
            ],
        ),
        cfg_case(
            "duplicate registry names",
            r("name: gar", "name: hub").replace("ecr-main, gar, hub", "ecr-main, hub"),
            &["registries[].name", "\"hub\" is defined twice", "fix:"],
        ),
        cfg_case(
            "duplicate secret names",
            good.replace(
                "namespaces:",
                "  - name: regcred\n    registries: [hub]\nnamespaces:",
            ),
            &["secrets[].name", "\"regcred\" is defined twice", "fix:"],
        ),
        cfg_case(
            "duplicate ServiceAccount names",
            r("[default]", "[default, builder, default]"),
            &["serviceAccounts", "\"default\" is listed twice", "fix:"],
        ),
        cfg_case(
            "invalid ServiceAccount name",
            r("[default]", "[Default]"),
            &["serviceAccounts[0]", "\"Default\"", "fix:"],
        ),
        // ---- empty lists ----
        cfg_case(
            "empty registries list",
            "registries: []\nsecrets: []\n".into(),
            &["registries", "the list is empty", "fix:"],
        ),
        cfg_case(
            "empty secrets list",
            good[..good.find("secrets:").unwrap()].to_string() + "secrets: []\n",
            &["secrets", "the list is empty", "fix:"],
        ),
        cfg_case(
            "secret with an empty registries list",
            r("[ecr-main, gar, hub]", "[]"),
            &["secrets[0].registries", "the list is empty", "fix:"],
        ),
        cfg_case(
            "empty namespaces.include",
            r("include: [\"team-*\"]", "include: []"),
            &["namespaces.include", "the list is empty", "fix:"],
        ),
        cfg_case(
            "empty google hosts",
            r("hosts: [gcr.io]", "hosts: []"),
            &["registries[1].google.hosts", "the list is empty", "fix:"],
        ),
        // ---- globs and selectors ----
        cfg_case(
            "invalid include glob",
            r("\"team-*\"", "\"team-[\""),
            &["namespaces.include[0]", "\"team-[\"", "fix:"],
        ),
        cfg_case(
            "invalid exclude glob",
            r("exclude: [kube-system]", "exclude: [\"kube-[a\"]"),
            &["namespaces.exclude[0]", "\"kube-[a\"", "fix:"],
        ),
        cfg_case(
            "invalid label selector",
            r("team in (a,b)", "team in (a,b"),
            &["namespaces.selector", "\"team in (a,b\"", "fix:"],
        ),
        // ---- sources ----
        cfg_case(
            "invalid region",
            r("region: us-east-1", "region: us-east"),
            &["registries[0].ecr.region", "\"us-east\"", "fix:"],
        ),
        cfg_case(
            "invalid account id",
            r("\"123456789012\"", "\"12345\""),
            &["registries[0].ecr.accountId", "\"12345\"", "fix:"],
        ),
        cfg_case(
            "invalid role ARN",
            r(":role/pull", ":user/pull"),
            &[
                "registries[0].ecr.roleArn",
                "\"arn:aws:iam::123456789012:user/pull\"",
                "fix:",
            ],
        ),
        cfg_case(
            "externalId without roleArn",
            r(
                ", roleArn: \"arn:aws:iam::123456789012:role/pull\"",
                ", externalId: abc",
            ),
            &["registries[0].ecr.externalId", "roleArn", "fix:"],
        ),
        cfg_case(
            "registry with two sources",
            r(
                "  - name: gar\n",
                "  - name: gar\n    static: { server: quay.io }\n",
            ),
            &["registries[1]", "\"gar\" has more than one source", "fix:"],
        ),
        cfg_case(
            "registry with no source",
            r("    google: { hosts: [gcr.io], keyFile:", "    #"),
            &["registries[1]", "\"gar\" has no source", "fix:"],
        ),
        cfg_case(
            "missing password file",
            r(pw, "/nonexistent/password"),
            &[
                "registries[2].static.passwordFile",
                "cannot be read",
                "fix:",
            ],
        ),
        cfg_case(
            "password file is a directory",
            r(pw, &dir),
            &[
                "registries[2].static.passwordFile",
                "is a directory",
                "fix:",
            ],
        ),
        cfg_case(
            "password env not set",
            r(
                &format!("passwordFile: \"{pw}\""),
                "passwordEnv: REGCRED_NOT_SET_ANYWHERE",
            ),
            &[
                "registries[2].static.passwordFile/passwordEnv",
                "the environment variable it names is not set",
                "fix:",
            ],
        ),
        cfg_case(
            "static source without a password",
            r(&format!("      passwordFile: \"{pw}\"\n"), ""),
            &["registries[2].static.passwordFile", "missing", "fix:"],
        ),
        cfg_case(
            "static source with dockerConfigJsonFile and username",
            r(
                "      username: bot\n",
                &format!("      username: bot\n      dockerConfigJsonFile: \"{pw}\"\n"),
            ),
            &[
                "registries[2].static",
                "dockerConfigJson source cannot also have server/username",
                "fix:",
            ],
        ),
        cfg_case(
            "invalid static server",
            r("https://index.docker.io/v1/", "\"https://bad host/\""),
            &[
                "registries[2].static.server",
                "\"https://bad host/\"",
                "fix:",
            ],
        ),
        cfg_case(
            "Google key file that is not a service-account key",
            r(&key, &user_cred),
            &[
                "registries[1].google.keyFile",
                "\"authorized_user\" credential, not a service-account key",
                "fix:",
            ],
        ),
        cfg_case(
            "Google key file that is not JSON",
            r(&key, &not_json),
            &[
                "registries[1].google.keyFile",
                "is not a Google credentials JSON file",
                "fix:",
            ],
        ),
        cfg_case(
            "missing Google key file",
            r(&key, "/nonexistent/key.json"),
            &["registries[1].google.keyFile", "cannot be read", "fix:"],
        ),
        // ---- issue 26 item 3: registry hosts the kubelet would never match ----
        cfg_case(
            "static server is only a port",
            r("https://index.docker.io/v1/", "\":5000\""),
            &["registries[2].static.server", "\":5000\"", "fix:"],
        ),
        cfg_case(
            "static server is a dot",
            r("https://index.docker.io/v1/", "\".\""),
            &["registries[2].static.server", "\".\"", "fix:"],
        ),
        cfg_case(
            "static server is a dash",
            r("https://index.docker.io/v1/", "\"-\""),
            &["registries[2].static.server", "\"-\"", "fix:"],
        ),
        cfg_case(
            "static server with an empty label",
            r("https://index.docker.io/v1/", "a..b"),
            &["registries[2].static.server", "\"a..b\"", "fix:"],
        ),
        cfg_case(
            "static server port over 65535",
            r("https://index.docker.io/v1/", "quay.io:70000"),
            &["registries[2].static.server", "70000", "fix:"],
        ),
        cfg_case(
            "google host label ending in a dash",
            r("hosts: [gcr.io]", "hosts: [gcr-.io]"),
            &["registries[1].google.hosts[0]", "\"gcr-.io\"", "fix:"],
        ),
        // ---- issue 26 item 7: what start-up used to let through ----
        cfg_case(
            "dockerConfigJsonFile that is not JSON",
            r(
                &static_login,
                &format!("      dockerConfigJsonFile: \"{not_json}\"\n"),
            ),
            &[
                "registries[2].static.dockerConfigJsonFile",
                "not a docker config JSON document",
                "fix:",
            ],
        ),
        cfg_case(
            "docker config keyed on registry-1.docker.io",
            r(
                &static_login,
                &format!("      dockerConfigJsonFile: \"{hub_alias}\"\n"),
            ),
            &[
                "registries[2].static.dockerConfigJsonFile",
                "registry-1.docker.io",
                "never matches",
                "fix:",
            ],
        ),
        cfg_case(
            "docker config keyed on a URL with user info",
            r(
                &static_login,
                &format!("      dockerConfigJsonFile: \"{userinfo_key}\"\n"),
            ),
            &[
                "registries[2].static.dockerConfigJsonFile",
                "user info",
                "fix:",
            ],
        ),
        cfg_case(
            "Google key file with a broken private_key",
            r(&key, &broken_key),
            &["registries[1].google.keyFile", "private_key", "fix:"],
        ),
        cfg_case(
            "literal namespace that is not RFC 1123",
            r("include: [\"team-*\"]", "include: [\"team-*\", Team_A]"),
            &["namespaces.include[1]", "\"Team_A\"", "RFC 1123", "fix:"],
        ),
        cfg_case(
            "literal excluded namespace that is not RFC 1123",
            r("exclude: [kube-system]", "exclude: [kube_system]"),
            &[
                "namespaces.exclude[0]",
                "\"kube_system\"",
                "RFC 1123",
                "fix:",
            ],
        ),
    ];
    {
        // The default chain's GOOGLE_APPLICATION_CREDENTIALS is checked the same way.
        let mut c = cfg_case(
            "GOOGLE_APPLICATION_CREDENTIALS not a service-account key",
            r(&format!(", keyFile: \"{key}\""), ""),
            &[
                "GOOGLE_APPLICATION_CREDENTIALS",
                "\"authorized_user\"",
                "fix:",
            ],
        );
        c.env
            .push(("GOOGLE_APPLICATION_CREDENTIALS", user_cred.clone()));
        cases.push(c);
    }

    // ---- flags ----
    let cfg = base.to_str().unwrap().to_string();
    let flag_case = |name: &'static str, args: &[&str], want: &[&str]| Case {
        name,
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![],
        want: want.iter().map(|w| w.to_string()).collect(),
    };
    let c = cfg.as_str();
    cases.extend([
        flag_case(
            "no configuration at all",
            &["--once"],
            &["--config", "no configuration given", "fix:"],
        ),
        flag_case(
            "config file missing",
            &["--once", "--config", "/nonexistent/config.yaml"],
            &["--config", "/nonexistent/config.yaml", "fix:"],
        ),
        flag_case(
            "config path is a directory",
            &["--once", "--config", &dir],
            &["--config", "is a directory", "fix:"],
        ),
        flag_case(
            "invalid cron (minute 61)",
            &["--config", c, "--schedule", "61 * * * *"],
            &["--schedule", "61 * * * *", "fix:"],
        ),
        flag_case(
            "invalid cron (six fields)",
            &["--once", "--config", c, "--schedule", "0 0 * * * *"],
            &["--schedule", "0 0 * * * *", "5 fields", "fix:"],
        ),
        flag_case(
            "refresh margin above 1",
            &["--once", "--config", c, "--refresh-margin", "1.5"],
            &["--refresh-margin", "1.5", "fix:"],
        ),
        flag_case(
            "refresh margin not a number",
            &["--once", "--config", c, "--refresh-margin", "quarter"],
            &["--refresh-margin", "'quarter'"],
        ),
        flag_case(
            "concurrency 0",
            &["--once", "--config", c, "--concurrency", "0"],
            &["--concurrency", "0 is out of range", "fix:"],
        ),
        flag_case(
            "provider timeout 0",
            &["--once", "--config", c, "--provider-timeout", "0"],
            &["--provider-timeout", "0 is out of range", "fix:"],
        ),
        flag_case(
            "invalid log level",
            &["--once", "--config", c, "--log-level", "info,[="],
            &["--log-level", "\"info,[=\"", "fix:"],
        ),
        flag_case(
            "invalid log format",
            &["--once", "--config", c, "--log-format", "xml"],
            &["--log-format", "'xml'"],
        ),
        flag_case(
            "--config with --ecr-region",
            &["--once", "--config", c, "--ecr-region", "us-east-1"],
            &["--config", "--ecr-region", "cannot be used with"],
        ),
        flag_case(
            "--diff with --dry-run",
            &["--once", "--config", c, "--diff", "--dry-run", "server"],
            &["--diff", "--dry-run", "cannot be used with"],
        ),
        flag_case(
            "dry run without --once",
            &["--config", c, "--dry-run", "client"],
            &["--dry-run=client", "without --once", "fix: add --once"],
        ),
        flag_case(
            "diff without --once",
            &["--config", c, "--diff"],
            &["--diff", "without --once", "fix: add --once"],
        ),
        flag_case(
            "invalid --dry-run value",
            &["--once", "--config", c, "--dry-run", "maybe"],
            &["--dry-run", "'maybe'"],
        ),
        flag_case(
            "quick flags: invalid region",
            &["--once", "--ecr-region", "useast1"],
            &["--ecr-region", "\"useast1\"", "fix:"],
        ),
        flag_case(
            "quick flags: invalid account id",
            &[
                "--once",
                "--ecr-region",
                "us-east-1",
                "--ecr-account-id",
                "1234",
            ],
            &["--ecr-account-id", "\"1234\"", "fix:"],
        ),
        flag_case(
            "quick flags: invalid role ARN",
            &[
                "--once",
                "--ecr-region",
                "us-east-1",
                "--ecr-role-arn",
                "arn:aws:iam::1:role/x",
            ],
            &["--ecr-role-arn", "\"arn:aws:iam::1:role/x\"", "fix:"],
        ),
        flag_case(
            "quick flags: secret name breaks RFC 1123",
            &[
                "--once",
                "--ecr-region",
                "us-east-1",
                "--secret-name",
                "My_Secret",
            ],
            &["--secret-name", "\"My_Secret\"", "fix:"],
        ),
        flag_case(
            "quick flags: invalid glob",
            &[
                "--once",
                "--ecr-region",
                "us-east-1",
                "--namespaces",
                "team-[x",
            ],
            &["--namespaces[0]", "\"team-[x\"", "fix:"],
        ),
        flag_case(
            "quick flags: invalid selector",
            &[
                "--once",
                "--ecr-region",
                "us-east-1",
                "--namespace-selector",
                "team in (a",
            ],
            &["--namespace-selector", "\"team in (a\"", "fix:"],
        ),
        flag_case(
            "quick flags: role ARN without region",
            &[
                "--once",
                "--ecr-role-arn",
                "arn:aws:iam::123456789012:role/x",
            ],
            &["--ecr-region <ECR_REGION>"],
        ),
        flag_case(
            "invalid instance label",
            &["--once", "--config", c, "--instance", "my instance"],
            &["--instance", "\"my instance\"", "fix:"],
        ),
        flag_case(
            "empty field manager",
            &["--once", "--config", c, "--field-manager", ""],
            &["--field-manager", "\"\"", "fix:"],
        ),
        flag_case(
            "lease duration too short",
            &[
                "--config",
                c,
                "--leader-election",
                "--lease-namespace",
                "default",
                "--lease-duration",
                "1",
            ],
            &["--lease-duration", "1 is out of range", "fix:"],
        ),
        flag_case(
            "invalid admin address",
            &["--config", c, "--admin-addr", "localhost"],
            &["--admin-addr", "'localhost'"],
        ),
        flag_case(
            "a cron that never fires (31 February)",
            &["--config", c, "--schedule", "0 0 31 2 *"],
            &["--schedule", "0 0 31 2 *", "never", "fix:"],
        ),
        flag_case(
            "--prune-secret-names without --prune",
            &["--config", c, "--prune-secret-names", "old-regcred"],
            &["--prune-secret-names", "without --prune", "fix:"],
        ),
        flag_case(
            "invalid --events value",
            &["--once", "--config", c, "--events", "sometimes"],
            &["--events", "'sometimes'"],
        ),
    ]);

    // ---- issue 26 item 1: a single-ECR flag is never silently dropped by --config ----
    for (flag, var, value) in [
        ("--namespaces", "REGCRED_NAMESPACES", "team-a"),
        ("--secret-name", "REGCRED_SECRET_NAME", "other"),
        (
            "--ecr-role-arn",
            "REGCRED_ECR_ROLE_ARN",
            "arn:aws:iam::123456789012:role/x",
        ),
        ("--ecr-account-id", "REGCRED_ECR_ACCOUNT_ID", "123456789012"),
        (
            "--exclude-namespaces",
            "REGCRED_EXCLUDE_NAMESPACES",
            "team-b",
        ),
        (
            "--namespace-selector",
            "REGCRED_NAMESPACE_SELECTOR",
            "team=a",
        ),
        ("--service-accounts", "REGCRED_SERVICE_ACCOUNTS", "default"),
    ] {
        let want = vec![
            "--config".to_string(),
            flag.to_string(),
            "cannot be used with".into(),
        ];
        cases.push(Case {
            name: "a single-ECR flag with --config",
            args: ["--once", "--diff", "--config", c, flag, value]
                .map(String::from)
                .to_vec(),
            env: vec![],
            want: want.clone(),
        });
        cases.push(Case {
            name: "a single-ECR variable with --config",
            args: ["--once", "--diff", "--config", c]
                .map(String::from)
                .to_vec(),
            env: vec![(var, value.to_string())],
            want,
        });
    }

    // An image without a CA store (SSL_CERT_FILE and SSL_CERT_DIR name empty ones here): the
    // Google key is fine, the error must not say to replace it.
    let no_ca_file = s.file("no-ca.pem", "");
    let no_ca_dir = s.dir.join("no-ca.d");
    std::fs::create_dir_all(&no_ca_dir).unwrap();
    cases.push(Case {
        name: "no CA certificates for Google's token endpoint",
        args: ["--once", "--diff", "--config", c]
            .map(String::from)
            .to_vec(),
        env: vec![
            ("SSL_CERT_FILE", no_ca_file.to_str().unwrap().to_string()),
            ("SSL_CERT_DIR", no_ca_dir.to_str().unwrap().to_string()),
        ],
        want: [
            "registries[1].google.keyFile",
            "no CA certificates",
            "SSL_CERT_FILE",
            "fix:",
        ]
        .map(String::from)
        .to_vec(),
    });

    let mut failures = Vec::new();
    for case in &cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let mut env: Vec<(&str, &str)> = vec![("KUBECONFIG", "/nonexistent")];
        env.extend(case.env.iter().map(|(k, v)| (*k, v.as_str())));
        let run = run_bin(&args, &env).await;
        let line = run
            .stderr
            .lines()
            .find(|l| case.want.iter().all(|w| l.contains(w.as_str())));
        let problem = if run.code != 2 {
            Some(format!("exit {} (want 2)", run.code))
        } else if run.stderr.contains("no Kubernetes configuration") {
            Some("reached the cluster client".into())
        } else if line.is_none() {
            Some(format!("no single line holds all of {:?}", case.want))
        } else if !(run.stderr.contains("fix:")
            || run.stderr.contains("did you mean")
            || run.stderr.contains("--help"))
        {
            Some("no fix offered".into())
        } else {
            None
        };
        if let Some(p) = problem {
            failures.push(format!(
                "case {:?}: {p}\n  args: {:?}\n  stderr: {}",
                case.name, case.args, run.stderr
            ));
        }
    }
    eprintln!("bad-input matrix: {} cases", cases.len());
    assert!(cases.len() >= 25);
    assert!(
        failures.is_empty(),
        "{} of {} bad-input cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

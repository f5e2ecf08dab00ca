//! A full local stack for end-to-end tests: moto as STS behind a recording proxy, an agent
//! with a test config, ~/.aws/config with roles, a software security key and a source in the
//! kernel keyring (the test binary runs inside `keyctl session -`, see scripts/test).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::util::{bin, repo, stderr, stdout, AgentProc, TestEnv};

pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// A background process killed on drop.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto on a port of its own choosing, with the recording proxy in front.
pub struct Sts {
    _moto: Bg,
    _proxy: Bg,
    pub url: String,
    pub moto_url: String,
    pub log: PathBuf,
    pub faults: PathBuf,
}

/// A private `dbus-daemon` bus (session configuration) and its address.
pub fn private_bus() -> (Bg, String) {
    let mut daemon = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon (apt-get install dbus)");
    let mut address = String::new();
    BufReader::new(daemon.stdout.take().expect("piped stdout"))
        .read_line(&mut address)
        .expect("the bus address");
    (Bg(daemon), address.trim().to_owned())
}

/// Starts `cmd`, a server that binds 127.0.0.1:0 itself and prints the port it got as its first
/// line on stdout once it listens (tests/py/moto_sts.py, tests/py/sts_recorder.py). No port is
/// chosen here and handed over later, so parallel tests cannot collide on one. Its stderr goes to
/// `log`.
pub fn spawn_listening(mut cmd: Command, what: &str, log: &Path) -> (Bg, u16) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let child = Bg(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Keep draining, so a later write never fails on a closed pipe.
        lines.map_while(Result::ok).for_each(drop);
    });
    // A generous deadline: moto imports for seconds on a loaded machine.
    let first = rx.recv_timeout(Duration::from_secs(120));
    let port = match &first {
        Ok(Some(Ok(line))) => line.trim().parse::<u16>().ok(),
        _ => None,
    };
    match port {
        Some(p) if p != 0 => (child, p),
        _ => panic!(
            "{what} did not report its port (got {first:?}); its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

impl Sts {
    pub fn start(dir: &Path) -> Sts {
        let mut moto = Command::new("python3");
        moto.arg(repo().join("tests/py/moto_sts.py"));
        let (moto, mport) = spawn_listening(
            moto,
            "moto (pip install 'moto[server]')",
            &dir.join("moto.log"),
        );
        let moto_url = format!("http://127.0.0.1:{mport}");
        let log = dir.join("sts-requests.jsonl");
        let faults = dir.join("sts-faults");
        let mut proxy = Command::new("python3");
        proxy.arg(repo().join("tests/py/sts_recorder.py")).args([
            "0",
            &moto_url,
            log.to_str().unwrap(),
            faults.to_str().unwrap(),
        ]);
        let (proxy, pport) =
            spawn_listening(proxy, "the STS recorder", &dir.join("sts-recorder.log"));
        let url = format!("http://127.0.0.1:{pport}");
        Sts {
            _moto: moto,
            _proxy: proxy,
            url,
            moto_url,
            log,
            faults,
        }
    }

    /// Makes the next `n` STS requests fail with HTTP `status` before reaching moto.
    pub fn fail_next(&self, n: usize, status: u16) {
        std::fs::write(&self.faults, format!("{status} 0\n").repeat(n)).unwrap();
    }

    /// Parameters of every recorded call with this `Action`.
    pub fn calls(&self, action: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["params"]["Action"] == action)
            .map(|v| v["params"].clone())
            .collect()
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Everything needed to open roles and call the endpoint.
pub struct Stack {
    pub env: TestEnv,
    pub sts: Sts,
    pub agent: AgentProc,
    pub soft: PathBuf,
    /// A source name unique to this test (tests share one session keyring).
    pub source: String,
    pub http: String,
}

impl Drop for Stack {
    /// Removes the test's source from the keyring (entries in the kernel's persistent keyring
    /// outlive the session keyring the tests run in).
    fn drop(&mut self) {
        let _ = self.credctl(&["source", "remove", &self.source]);
    }
}

impl Stack {
    /// Starts moto, writes configs (`extra_aws` is appended to ~/.aws/config, with `SOURCE`
    /// replaced by the source name; `extra_agent_config` to config.toml, its `approval.KEY`
    /// lines into the `[approval]` table) and starts the agent.
    pub fn new(extra_aws: &str, extra_agent_config: &str) -> Stack {
        Self::new_with_env(extra_aws, extra_agent_config, &[])
    }

    /// As [`Stack::new`], with extra environment variables for the agent and every command.
    pub fn new_with_env(extra_aws: &str, extra_agent_config: &str, vars: &[(&str, &str)]) -> Stack {
        let mut env = TestEnv::new();
        env.extra_env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sts = Sts::start(env.dir.path());
        let source = format!(
            "base{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        std::fs::create_dir_all(env.home.join(".config/credagent")).unwrap();
        // Lines `approval.KEY = …` of the extra config go into the [approval] table.
        let (approval, top): (Vec<&str>, Vec<&str>) = extra_agent_config
            .lines()
            .partition(|l| l.starts_with("approval."));
        let approval: String = approval
            .iter()
            .map(|l| format!("{}\n", &l["approval.".len()..]))
            .collect();
        std::fs::write(
            env.home.join(".config/credagent/config.toml"),
            format!(
                "sts_endpoint = \"{}\"\nkeyring = \"keyutils\"\n{}\n[approval]\nallow_software_authenticators = true\n{approval}",
                sts.url,
                top.join("\n"),
            ),
        )
        .unwrap();
        std::fs::create_dir_all(env.home.join(".aws")).unwrap();
        let aws = format!(
            "[profile SOURCE]\nregion = us-east-1\n\n[profile demo]\nrole_arn = arn:aws:iam::123456789012:role/demo\nsource_profile = SOURCE\n\n{extra_aws}"
        )
        .replace("SOURCE", &source);
        std::fs::write(env.home.join(".aws/config"), aws).unwrap();
        let agent = env.agent(&[]);
        let status: serde_json::Value =
            serde_json::from_slice(&env.credctl(&["status", "--json"]).stdout).unwrap();
        let http = status["http_addr"].as_str().unwrap().to_owned();
        let soft = env.home.join("soft.cbor");
        Stack {
            env,
            sts,
            agent,
            soft,
            source,
            http,
        }
    }

    pub fn soft_arg(&self) -> String {
        format!("soft:{}", self.soft.display())
    }

    /// `credctl ARGS` with the software authenticator selected.
    pub fn credctl(&self, args: &[&str]) -> Output {
        self.env
            .command(bin("credctl"))
            .env("CREDCTL_AUTHENTICATOR", self.soft_arg())
            .args(args)
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.credctl(args);
        assert!(
            out.status.success(),
            "credctl {args:?} failed: {}\nagent log:\n{}",
            stderr(&out),
            self.agent.log_text()
        );
        stdout(&out)
    }

    /// Registers the soft key and stores the source.
    pub fn with_key_and_source(self) -> Stack {
        self.ok(&["key", "add", "soft", "--accept-change"]);
        self.with_source()
    }

    /// Stores the source (no key).
    pub fn with_source(self) -> Stack {
        let out = self
            .env
            .command(bin("credctl"))
            // With a key registered, adding a source takes its touch.
            .env("CREDCTL_AUTHENTICATOR", self.soft_arg())
            .args(["source", "add", &self.source, "--stdin"])
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(format!("AKIAIOSFODNN7EXAMPLE\n{SECRET_KEY}\n").as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success(), "source add: {}", stderr(&out));
        self
    }

    /// Gives the source profile an MFA device (`mfa_serial`), as a user whose access key needs
    /// a code writes it.
    pub fn with_source_mfa_serial(self) -> Stack {
        let cfg = self.env.home.join(".aws/config");
        let text = std::fs::read_to_string(&cfg).unwrap().replacen(
            "region = us-east-1",
            "region = us-east-1\nmfa_serial = arn:aws:iam::123456789012:mfa/alice",
            1,
        );
        std::fs::write(&cfg, text).unwrap();
        self
    }

    /// A token bound to `role` (opening the session with a touch if needed).
    pub fn role_token(&self, role: &str) -> String {
        token_from_exports(&self.ok(&["env", role]))
    }

    /// A token bound to `role` without opening its session (what `credctl env` sends after
    /// the touch), for requests a role with no approved session gets.
    pub fn unopened_role_token(&self, role: &str) -> String {
        let (mut sock, _) = crate::util::hello(&self.env.sock).unwrap();
        credagent_proto::write_frame(
            &mut sock,
            &credagent_proto::Request::TokenForRole {
                role: role.into(),
                scoped: false,
                purpose: "env".into(),
                // This test process, whose children (curl, the SDKs) present it.
                holder: Some(std::process::id() as i32),
            },
        )
        .unwrap();
        match credagent_proto::read_frame(&mut sock).unwrap() {
            credagent_proto::Response::Token { token, .. } => token.expose().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    pub fn ecs_uri(&self) -> String {
        format!("http://{}/v1/credentials", self.http)
    }

    /// GET the ECS endpoint with curl: (status, body).
    pub fn ecs(&self, token: Option<&str>, extra: &[&str]) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-w", "\n%{http_code}", "--max-time", "5"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: {t}")]);
        }
        for h in extra {
            cmd.args(["-H", h]);
        }
        let out = cmd.arg(self.ecs_uri()).output().unwrap();
        let text = stdout(&out);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.parse().unwrap_or(0), body.to_owned())
    }

    /// An environment for an SDK process: scrubbed, pointing at the agent with `token`.
    pub fn sdk_command(&self, program: &str, token: &str) -> Command {
        let mut cmd = self.env.command(program);
        cmd.env("AWS_CONTAINER_CREDENTIALS_FULL_URI", self.ecs_uri())
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", token)
            .env("AWS_ENDPOINT_URL_STS", &self.sts.moto_url)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    }
}

/// The signature counter of the first registered key: it moves by one per touch, so a test
/// can tell whether a touch was spent.
pub fn key_counter(s: &Stack) -> u64 {
    let keys: serde_json::Value = serde_json::from_str(&s.ok(&["key", "list", "--json"])).unwrap();
    keys[0]["counter"].as_u64().unwrap()
}

/// The token in `export` lines printed by `credctl start` or `credctl env`.
pub fn token_from_exports(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("AWS_CONTAINER_AUTHORIZATION_TOKEN='"))
        .and_then(|l| l.split('\'').next())
        .unwrap_or_else(|| panic!("no token export in {text:?}"))
        .to_owned()
}

/// Asserts that an SDK process printed the ARN of the role `demo` assumed through the agent.
pub fn assert_demo_arn(what: &str, out: &Output) {
    let arn = stdout(out);
    assert!(
        out.status.success()
            && arn
                .trim()
                .starts_with("arn:aws:sts::123456789012:assumed-role/demo/"),
        "{what}: stdout {arn:?}, stderr {}",
        stderr(out)
    );
}

pub const BOTO3_WHOAMI: &str =
    "import boto3; print(boto3.client('sts', region_name='us-east-1').get_caller_identity()['Arn'])";

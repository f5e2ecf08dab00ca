//! `credctl start` evaluated by the real shells (bash and dash, fish, tcsh) in each way
//! `credctl --help` tells users to load it. The values come from a fake agent (the URI and the
//! token) and from the user (the socket path), and they are hostile: every one must arrive byte
//! for byte, nothing in them may run, and a value a shell cannot carry must be refused with
//! nothing printed for the shell to evaluate.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use credagent_proto::{
    read_frame, write_frame, ErrorCode, Request, Response, Secret, PROTOCOL_VERSION,
};

use crate::util::{bin, stderr, stdout, TestEnv};

/// A fake agent: answers `Hello` and `TokenShell` with the given URI and token. It runs as us in
/// a private directory, so credctl's checks pass and only the values are under test.
struct FakeAgent {
    sock: PathBuf,
    connections: Arc<AtomicUsize>,
}

impl FakeAgent {
    /// Listens on `dir/agent.sock`, creating `dir` (mode 0700).
    fn start(dir: &Path, uri: &str, token: &str) -> FakeAgent {
        // Without root, credctl can see the executable only of a dumpable peer, and refuses any
        // dumpable peer: a credagent never is one. The fake agent (this test process) says so too.
        if !nix::unistd::geteuid().is_root() {
            nix::sys::prctl::set_dumpable(false).unwrap();
        }
        std::fs::create_dir(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let sock = dir.join("agent.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let (count, uri, token) = (connections.clone(), uri.to_owned(), token.to_owned());
        // The thread ends with the test process; each connection is served in turn.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                count.fetch_add(1, Ordering::SeqCst);
                serve(conn, &uri, &token);
            }
        });
        FakeAgent { sock, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// What credctl must take for the agent binary: the fake agent listens in this test process, and
/// credctl talks only to a process running the binary it would start (CREDAGENT_BIN names it).
/// Should credctl ever miss the fake agent, it would start this test binary with `--socket`,
/// which the test harness refuses: a real agent is never started.
fn fake_agent_binary() -> PathBuf {
    std::env::current_exe().expect("the test binary's path")
}

fn serve(mut conn: UnixStream, uri: &str, token: &str) {
    while let Ok(req) = read_frame::<_, Request>(&mut conn) {
        let resp = match req {
            Request::Hello { .. } => Response::Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "fake".into(),
                pid: 4242,
            },
            Request::TokenShell { .. } => Response::Token {
                token: Secret::new(token),
                token_id: "fake".into(),
                uri: uri.into(),
            },
            other => Response::Error {
                code: ErrorCode::UnknownRequest,
                message: format!("the fake agent does not serve {other:?}"),
            },
        };
        if write_frame(&mut conn, &resp).is_err() {
            return;
        }
    }
}

/// The ways users load `credctl start` output, each in its real shell.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// `eval "$(credctl start)"` in bash.
    Bash,
    /// The same in dash (a POSIX sh).
    Dash,
    /// `credctl start --fish | source`.
    Fish,
    /// ``eval `credctl start --csh` `` in tcsh: the form ssh-agent users know.
    TcshEval,
    /// ``eval "`credctl start --csh`"`` in tcsh.
    TcshEvalQuoted,
    /// `credctl start --csh > FILE; source FILE` in tcsh.
    TcshSource,
}

const SH: [Load; 2] = [Load::Bash, Load::Dash];
const FISH: [Load; 1] = [Load::Fish];
const CSH: [Load; 3] = [Load::TcshEval, Load::TcshEvalQuoted, Load::TcshSource];

impl Load {
    /// The shell and its script. `$WRAP` runs credctl on the fake agent's socket (its path read
    /// from a file, not the environment: fish in the C locale re-encodes non-ASCII variables it
    /// imports); the environment is then written NUL-separated to `$OUT`.
    fn command(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            Load::Bash => (
                "bash",
                &["--norc", "--noprofile", "-c"],
                r#"eval "$("$WRAP" start)"; env -0 > "$OUT""#,
            ),
            Load::Dash => (
                "dash",
                &["-c"],
                r#"eval "$("$WRAP" start)"; env -0 > "$OUT""#,
            ),
            Load::Fish => (
                "fish",
                &["--no-config", "-c"],
                "$WRAP start --fish | source; env -0 > $OUT",
            ),
            Load::TcshEval => (
                "tcsh",
                &["-f", "-c"],
                "eval `$WRAP start --csh`; env -0 > $OUT",
            ),
            Load::TcshEvalQuoted => (
                "tcsh",
                &["-f", "-c"],
                r#"eval "`$WRAP start --csh`"; env -0 > $OUT"#,
            ),
            Load::TcshSource => (
                "tcsh",
                &["-f", "-c"],
                "$WRAP start --csh > $SCRIPT; source $SCRIPT; env -0 > $OUT",
            ),
        }
    }
}

/// Variables `credctl start` sets or unsets, each given a stale value beforehand so that a
/// statement that did not run shows.
const SET: [&str; 3] = [
    "CREDAGENT_SOCK",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];
const UNSET: [&str; 5] = [
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// The locales each shell runs in: the bare C locale, and UTF-8 as most users have.
const LOCALES: [&str; 2] = ["C", "C.UTF-8"];

/// Runs `load` in `locale` against `agent` in an empty working directory and returns the
/// environment the shell ended with. Panics if anything appeared in the working directory:
/// every injection in the values would create a file there.
fn evaluate(
    env: &TestEnv,
    agent: &FakeAgent,
    load: Load,
    locale: &str,
    run: usize,
) -> HashMap<String, Vec<u8>> {
    let base = env.dir.path().join(format!("run-{run}"));
    let work = base.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let sock_file = base.join("sock");
    std::fs::write(&sock_file, agent.sock.as_os_str().as_encoded_bytes()).unwrap();
    let wrap = base.join("wrap");
    std::fs::write(
        &wrap,
        format!(
            "#!/bin/sh\nexec \"$CREDCTL\" --socket \"$(cat '{}')\" \"$@\"\n",
            sock_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrap, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out_file = base.join("env");
    let (shell, flags, script) = load.command();
    let mut cmd = Command::new(shell);
    cmd.args(flags)
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &env.home)
        .env("XDG_CONFIG_HOME", base.join("config"))
        .env("XDG_DATA_HOME", base.join("data"))
        .env("LC_ALL", locale)
        .env("CREDCTL", bin("credctl"))
        .env("CREDAGENT_BIN", fake_agent_binary())
        .env("WRAP", &wrap)
        .env("OUT", &out_file)
        .env("SCRIPT", base.join("script.csh"))
        .current_dir(&work)
        .stdin(Stdio::null());
    for v in SET.iter().chain(&UNSET) {
        cmd.env(v, "stale");
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {shell} ({e}): install it (scripts/setup installs fish and tcsh)")
    });
    let leftovers: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "{load:?} {locale}: something in the values ran and created {leftovers:?}\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    let dump = std::fs::read(&out_file).unwrap_or_else(|e| {
        panic!(
            "{load:?} {locale}: no environment dump ({e})\nstdout: {}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        )
    });
    dump.split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let eq = kv.iter().position(|b| *b == b'=')?;
            Some((
                String::from_utf8_lossy(&kv[..eq]).into_owned(),
                kv[eq + 1..].to_vec(),
            ))
        })
        .collect()
}

/// Starts a fake agent in `dir_name` serving `uri` and `token`, loads `credctl start` in each of
/// `loads`, and compares the resulting environment byte for byte.
fn round_trip(loads: &[Load], dir_name: &str, uri: &str, token: &str) {
    let env = TestEnv::new();
    let agent = FakeAgent::start(&env.dir.path().join(dir_name), uri, token);
    let sock = agent.sock.to_str().unwrap().as_bytes().to_vec();
    let runs = loads.iter().flat_map(|l| LOCALES.map(|loc| (*l, loc)));
    for (run, (load, locale)) in runs.enumerate() {
        let got = evaluate(&env, &agent, load, locale, run);
        let expect = [sock.clone(), uri.into(), token.into()];
        for (var, want) in SET.iter().zip(expect) {
            let have = got.get(*var);
            assert_eq!(
                have.map(|v| String::from_utf8_lossy(v).into_owned()),
                Some(String::from_utf8_lossy(&want).into_owned()),
                "{load:?} {locale}: {var}"
            );
            assert_eq!(have, Some(&want), "{load:?} {locale}: {var}, byte for byte");
        }
        for var in UNSET {
            assert_eq!(got.get(var), None, "{load:?} {locale}: {var} must be unset");
        }
    }
    assert_eq!(
        agent.connections(),
        loads.len() * LOCALES.len(),
        "one connection per start"
    );
}

/// Characters every syntax carries: quotes of both kinds and the sh idiom, backslashes (one at
/// the very end, which would escape fish's closing quote), expansions and substitutions of
/// every shell, command separators, redirections that would create a file, globs, csh history
/// (`!`) and `~`/`=` at what a split would make a word start, runs of spaces, and non-ASCII.
const HOSTILE: &str = "t'o\"k \\ \\' '\\'' $HOME $(touch pwned) `touch pwned` ;touch pwned; \
                       |touch pwned & <x >pwned (a) #c %1 * ? [a] ~ ~root =1 -x !! !$ !-1 \
                       ^a^b é漢🙂 a  b \u{7f}\r x\\";
/// What sh and fish carry on top: newlines, tabs and braces.
const HOSTILE_SH: &str = "\n{a,b}\t${HOME} {touch,pwned}\n";
/// A directory name for the socket (its path must stay under the 108 bytes of a Unix socket
/// address).
const DIR_ALL: &str = "it's \"q\" $(touch pwned) `touch p` !x \\ é";
const DIR_SH: &str = "a\nb'c $(touch pwned) {x,y}\t\\";
const URI: &str = "http://127.0.0.1:9/v1/credentials?q='x'&r=$(touch pwned)&s=`touch p`#!x";

#[test]
fn plain_values_through_every_shell() {
    let loads: Vec<Load> = SH.iter().chain(&FISH).chain(&CSH).copied().collect();
    round_trip(
        &loads,
        "plain",
        "http://127.0.0.1:41234/v1/credentials",
        "0123456789abcdef",
    );
}

#[test]
fn hostile_values_through_every_shell() {
    let loads: Vec<Load> = SH.iter().chain(&FISH).chain(&CSH).copied().collect();
    round_trip(&loads, DIR_ALL, URI, HOSTILE);
}

#[test]
fn newlines_tabs_and_braces_through_sh_and_fish() {
    let loads: Vec<Load> = SH.iter().chain(&FISH).copied().collect();
    let token = format!("{HOSTILE}{HOSTILE_SH}");
    round_trip(&loads, DIR_SH, &format!("{URI}\n{{x}}"), &token);
    // A value that starts like an option of fish's `set`.
    round_trip(&loads, "option-like", "-e", "--help");
}

/// Runs `credctl start` with `flags` on a fake agent serving `token`.
fn start(env: &TestEnv, agent: &FakeAgent, flags: &[&str]) -> Output {
    env.command(bin("credctl"))
        .env("CREDAGENT_BIN", fake_agent_binary())
        .args(["--socket", agent.sock.to_str().unwrap(), "start"])
        .args(flags)
        .output()
        .unwrap()
}

fn assert_unwritable(what: &str, out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert_eq!(stdout(out), "", "{what}: nothing for the shell to evaluate");
    for n in needles {
        assert!(err.contains(n), "{what}: {n:?} missing from: {err}");
    }
}

#[test]
fn csh_refuses_what_it_cannot_carry() {
    let env = TestEnv::new();
    for (i, (bad, why)) in [
        ("a\nb", "a newline"),
        ("a\tb", "a tab"),
        ("{a,b}", "a brace"),
        ("a}", "a brace"),
    ]
    .into_iter()
    .enumerate()
    {
        let agent = FakeAgent::start(&env.dir.path().join(format!("agent-{i}")), URI, bad);
        let out = start(&env, &agent, &["--csh"]);
        assert_unwritable(
            bad,
            &out,
            &[
                "cannot write AWS_CONTAINER_AUTHORIZATION_TOKEN for csh",
                why,
                "--fish",
            ],
        );
        // sh and fish carry the same value.
        for flags in [&[][..], &["--fish"]] {
            let out = start(&env, &agent, flags);
            assert!(out.status.success(), "{bad:?} {flags:?}: {}", stderr(&out));
        }
    }

    // A socket path csh cannot carry is refused before anything connects (or an agent starts).
    let agent = FakeAgent::start(&env.dir.path().join("{x,y}"), URI, "tok");
    let out = start(&env, &agent, &["--csh"]);
    assert_unwritable(
        "socket path",
        &out,
        &["cannot write CREDAGENT_SOCK for csh", "a brace", "--socket"],
    );
    assert_eq!(agent.connections(), 0);

    // So is a token file path, before a touch is asked for or the file written.
    let agent = FakeAgent::start(&env.dir.path().join("agent-env"), URI, "tok");
    let file = env.dir.path().join("tok\tfile");
    let out = env
        .command(bin("credctl"))
        .args([
            "--socket",
            agent.sock.to_str().unwrap(),
            "env",
            "demo",
            "--csh",
        ])
        .arg("--token-file")
        .arg(&file)
        .output()
        .unwrap();
    assert_unwritable(
        "token file",
        &out,
        &[
            "cannot write AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE for csh",
            "a tab",
            "--token-file",
        ],
    );
    assert_eq!(agent.connections(), 0);
    assert!(!file.exists());
}

#[test]
fn nul_is_refused_by_every_shell() {
    let env = TestEnv::new();
    let agent = FakeAgent::start(&env.dir.path().join("agent"), URI, "a\0b");
    for flags in [&[][..], &["--fish"], &["--csh"]] {
        let out = start(&env, &agent, flags);
        assert_unwritable(
            &format!("{flags:?}"),
            &out,
            &["cannot write AWS_CONTAINER_AUTHORIZATION_TOKEN", "NUL"],
        );
    }
}

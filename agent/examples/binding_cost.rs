//! What checking a bound token's holder costs per new connection: the agent finds which process
//! of the holder's tree holds the peer socket (`procs::find_in_tree`), with `N` other processes
//! running on the machine (`sleep`s, started here). A child process (the client, like an SDK or
//! a load generator) holds `C` connections to a listener of ours; each accepted connection is
//! looked up as the endpoint does, by the inode sock_diag reports.
//!
//! Prints one JSON object: microseconds per lookup (median, p90) found by walking the tree (no
//! hint: each lookup with fresh hints), found where a scan for another connection of the same
//! client saw the socket (`seen`: the client's connections opened together, as a load generator
//! or a parallel SDK opens them), and found by a free-descriptor hint (the client reconnecting
//! on a descriptor it just closed).
//!
//! usage: binding_cost [OTHER_PROCESSES] [CONNECTIONS] [inside|outside]
//!
//! `outside` (the default): the other processes run outside the holder's tree (a machine's
//! other programs); `inside`: they are the holder's children too (an IDE with hundreds of
//! helpers), which the walk must look through.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Instant;

use credagent::http::peer;
use credagent::procs::{find_in_tree, ProcessId, SocketHints};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let others: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let conns: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let inside = args.next().as_deref() == Some("inside");
    let mut sleepers = Vec::new();
    let mut outside: Vec<String> = Vec::new();
    if inside {
        for _ in 0..others {
            sleepers.push(
                Command::new("sleep")
                    .arg("600")
                    .stdout(Stdio::null())
                    .spawn()?,
            );
        }
    } else {
        // Started by a shell that exits at once: init adopts them, outside our tree.
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("for i in $(seq {others}); do sleep 600 >/dev/null 2>&1 & echo $!; done"),
            ])
            .stderr(Stdio::null())
            .output()?;
        outside = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    // The client: connects `conns` times, then, for each line read, closes its oldest socket
    // and connects a new one (which takes the descriptor just freed).
    let script = format!(
        "import socket,sys\n\
         s=[socket.create_connection(('127.0.0.1',{port})) for _ in range({conns})]\n\
         print('ready',flush=True)\n\
         for line in sys.stdin:\n\
         \x20   s.pop(0).close(); s.append(socket.create_connection(('127.0.0.1',{port}))); print('ok',flush=True)\n"
    );
    let mut client = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let me = ProcessId::of(std::process::id() as i32).ok_or("no /proc/self")?;
    let hints = SocketHints::default();
    let lookup = |stream: &std::net::TcpStream,
                  hints: &SocketHints|
     -> Result<(f64, ProcessId, i32), String> {
        let p = peer::lookup(
            stream.local_addr().map_err(|e| e.to_string())?,
            stream.peer_addr().map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let t = Instant::now();
        let (holder, fd) = find_in_tree(me, p.inode, hints).ok_or("not found in the tree")?;
        Ok((t.elapsed().as_secs_f64() * 1e6, holder, fd))
    };
    let mut held = Vec::new();
    let mut walks = Vec::new();
    let mut seen = Vec::new();
    for i in 0..conns {
        let (stream, _) = listener.accept()?;
        // The walk, with nothing learnt before; then the same socket as the agent meets it,
        // where the first connection's scan saw the others.
        let (us, _, _) = lookup(&stream, &SocketHints::default())?;
        walks.push(us);
        let (us, holder, fd) = lookup(&stream, &hints)?;
        if i > 0 {
            seen.push(us);
        }
        held.push((stream, holder, fd));
    }
    let mut out = BufReader::new(client.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let mut input = client.stdin.take().ok_or("no stdin")?;
    let mut hinted = Vec::new();
    for _ in 0..conns.max(200) {
        // The oldest connection closes; its descriptor is a hint for the next.
        let (old, holder, fd) = held.remove(0);
        drop(old);
        hints.closed(me, holder, fd);
        writeln!(input)?;
        line.clear();
        out.read_line(&mut line)?;
        let (stream, _) = listener.accept()?;
        let (us, holder, fd) = lookup(&stream, &hints)?;
        hinted.push(us);
        held.push((stream, holder, fd));
    }
    let stats = hints.stats();
    drop(input);
    let _ = client.wait();
    for mut s in sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
    if !outside.is_empty() {
        let _ = Command::new("kill").args(&outside).status();
    }
    walks.sort_by(f64::total_cmp);
    hinted.sort_by(f64::total_cmp);
    seen.sort_by(f64::total_cmp);
    println!(
        "{{\"other_processes\": {others}, \"inside_the_tree\": {inside}, \"connections\": {conns}, \"walk_p50_us\": {:.1}, \"walk_p90_us\": {:.1}, \"seen_p50_us\": {:.1}, \"seen_p90_us\": {:.1}, \"hint_p50_us\": {:.1}, \"hint_p90_us\": {:.1}, \"hint_hits\": {}, \"lookups\": {}}}",
        percentile(&walks, 0.5),
        percentile(&walks, 0.9),
        percentile(&seen, 0.5),
        percentile(&seen, 0.9),
        percentile(&hinted, 0.5),
        percentile(&hinted, 0.9),
        stats.hint_hits,
        stats.lookups
    );
    Ok(())
}

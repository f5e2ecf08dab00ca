//! Reading from the user's terminal (`/dev/tty`), so prompts work even when stdout and stdin are
//! redirected (e.g. under `credential_process`). Hidden input turns echo off.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;

use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
use zeroize::Zeroizing;

use crate::error::{Failure, Result};

/// Asks `question` on the terminal and reads one line; `hidden` turns echo off.
pub fn ask(question: &str, hidden: bool, what_to_do: &str) -> Result<Zeroizing<String>> {
    let tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| Failure::failed(format!("no terminal to ask on: {what_to_do}")))?;
    let mut out = tty
        .try_clone()
        .map_err(|e| Failure::failed(format!("terminal: {e}")))?;
    let _ = write!(out, "{question}");
    let _ = out.flush();
    let saved = if hidden {
        tcgetattr(tty.as_fd()).ok()
    } else {
        None
    };
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(tty.as_fd(), SetArg::TCSANOW, &quiet);
    }
    let mut line = Zeroizing::new(String::new());
    let read = BufReader::new(&tty).read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(tty.as_fd(), SetArg::TCSANOW, t);
        let _ = writeln!(out);
    }
    read.map_err(|e| Failure::failed(format!("cannot read the terminal: {e}")))?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
    Ok(trimmed)
}

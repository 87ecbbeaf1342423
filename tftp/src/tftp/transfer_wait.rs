//! A transfer of a static file waiting for it: for its open (its OACK
//! carries the length it had then) or for its next window's bytes. The
//! reads run on other threads (`read_ahead`); the transfer's timer looks
//! for them, and ends the transfer with an error packet when they fail or
//! take longer than its timeout.

use std::io;
use std::time::Instant;

use super::super::read_ahead::{next_look, read_refusal};
use super::{Timer, Transfer, TransferEnd};

impl Transfer {
    /// The timer of a transfer waiting for its file: what has been read
    /// by now goes out; else it looks again soon, until its timeout.
    pub(super) fn on_wait(&mut self, now: Instant) -> Timer {
        let Some(since) = self.waiting else {
            return Timer::Stalled;
        };
        let read_by = since + self.timeout;
        match self.resume(now) {
            Ok(()) if self.waiting.is_none() => {
                self.progressed(now);
                Timer::Resend
            }
            Ok(()) if now < read_by => {
                self.deadline = next_look(since, now).min(read_by);
                Timer::Wait
            }
            Ok(()) => self.unreadable(io::Error::new(
                io::ErrorKind::TimedOut,
                "the file was not read within the transfer's timeout",
            )),
            Err(e) => self.unreadable(e),
        }
    }

    /// Once the file is open, its OACK (with its length) or first window;
    /// after that, the rest of the window.
    fn resume(&mut self, now: Instant) -> io::Result<()> {
        let Some((mut oack, tsize)) = self.opening.take() else {
            return self.fill(now);
        };
        self.reader.raw.ready(0)?;
        let Some(len) = self.reader.raw.len() else {
            self.opening = Some((oack, tsize));
            return Ok(());
        };
        if tsize {
            oack.push(("tsize", len.to_string()));
        }
        self.waiting = None;
        self.begin(oack, now)
    }

    /// Ends the transfer at this timer, with `e`'s error packet.
    fn unreadable(&mut self, e: io::Error) -> Timer {
        self.unreadable = Some(read_refusal(self.slot.peer(), &self.file, &e));
        self.waiting = None;
        self.end(TransferEnd::Failed);
        Timer::Stalled
    }
}

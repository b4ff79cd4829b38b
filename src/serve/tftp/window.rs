//! The sender's window: which blocks go out next and what an ACK means. Pure bookkeeping.
//!
//! Blocks are counted with absolute `u64` numbers from 1; the wire carries the low 16 bits,
//! so block 65536 goes out as 0 (the rollover tftp-hpa and most clients expect). A file of
//! `n` bytes takes `n / blksize + 1` blocks: the last one is shorter than `blksize`, empty
//! when `n` is a multiple of it (RFC 1350).
//!
//! A round sends up to `windowsize` blocks after the last acknowledged one
//! ([RFC 7440](https://www.rfc-editor.org/rfc/rfc7440)); an ACK for any block sent in the
//! round moves the window there and starts a new round. An ACK that moves nothing (a
//! duplicate) is ignored in lockstep — answering duplicates is the sorcerer's-apprentice
//! bug — and in windowed mode triggers at most one resend per window position (RFC 7440
//! receivers repeat the last in-order ACK to ask for the rest); past that, only the
//! retransmission timer resends. ACKs for blocks not yet sent or long gone are ignored.
//!
//! A timeout resends from the first unacknowledged block (RFC 7440 §4), with the window
//! halved ([`Window::on_timeout`]) until an ACK moves it again, when it is whole again: a
//! client that never acknowledges gets at most about twice one window in all, whatever the
//! number of retries, instead of the whole window again on every timeout.

use std::ops::RangeInclusive;

/// What an incoming ACK did to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckOutcome {
    /// The last block is acknowledged: the transfer is complete.
    Done,
    /// The window moved: send the next round.
    Advanced,
    /// A duplicate ACK in windowed mode, first of its kind: resend the round.
    Resend,
    /// Nothing to do (duplicate, stale or future ACK).
    Ignore,
}

/// The sender's window over the blocks of one file.
#[derive(Debug, Clone)]
pub(super) struct Window {
    windowsize: u64,
    /// The window in force: `windowsize`, halved by each timeout since the last advance.
    current: u64,
    last_block: u64,
    acked: u64,
    sent_upto: u64,
    dup_served_at: Option<u64>,
}

impl Window {
    /// A window for a file of `file_size` bytes sent in `blksize` blocks (`blksize` ≥ 1),
    /// `windowsize` blocks at a time (0 is taken as 1).
    pub(super) fn new(file_size: u64, blksize: u16, windowsize: u16) -> Window {
        let blksize = u64::from(blksize.max(1));
        Window {
            windowsize: u64::from(windowsize.max(1)),
            current: u64::from(windowsize.max(1)),
            last_block: file_size / blksize + 1,
            acked: 0,
            sent_upto: 0,
            dup_served_at: None,
        }
    }

    /// The absolute number of the last block.
    #[cfg(test)]
    pub fn last_block(&self) -> u64 {
        self.last_block
    }

    /// The highest block the client acknowledged (0 before any).
    #[cfg(test)]
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The blocks of the next round, from the first unacknowledged one; records them as
    /// sent.
    pub(super) fn next_round(&mut self) -> RangeInclusive<u64> {
        let first = self.acked + 1;
        let last = (self.acked + self.current).min(self.last_block);
        // The highest block ever sent: a smaller round after a timeout does not make the
        // blocks of the earlier, larger one unsent (their ACKs still count).
        self.sent_upto = self.sent_upto.max(last);
        first..=last
    }

    /// No ACK came within the timeout: the next round starts again at the first
    /// unacknowledged block with half the window (at least one block).
    pub(super) fn on_timeout(&mut self) {
        self.current = (self.current / 2).max(1);
    }

    /// Applies an ACK carrying wire block number `wire`.
    pub(super) fn on_ack(&mut self, wire: u16) -> AckOutcome {
        let delta = u64::from(wire.wrapping_sub(wire_block(self.acked)));
        if delta == 0 {
            if self.windowsize > 1 && self.dup_served_at != Some(self.acked) {
                self.dup_served_at = Some(self.acked);
                return AckOutcome::Resend;
            }
            return AckOutcome::Ignore;
        }
        if delta > self.sent_upto.saturating_sub(self.acked) {
            return AckOutcome::Ignore;
        }
        self.acked += delta;
        self.current = self.windowsize;
        if self.acked >= self.last_block {
            AckOutcome::Done
        } else {
            AckOutcome::Advanced
        }
    }
}

/// The wire block number of absolute block `block`: its low 16 bits.
pub(super) fn wire_block(block: u64) -> u16 {
    (block & 0xffff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn block_count_includes_the_short_last_block() {
        assert_eq!(Window::new(0, 512, 1).last_block(), 1);
        assert_eq!(Window::new(511, 512, 1).last_block(), 1);
        assert_eq!(Window::new(512, 512, 1).last_block(), 2);
        assert_eq!(Window::new(1025, 512, 1).last_block(), 3);
    }

    #[test]
    fn lockstep_ignores_duplicates() {
        let mut w = Window::new(2000, 512, 1);
        assert_eq!(w.next_round(), 1..=1);
        assert_eq!(w.on_ack(0), AckOutcome::Ignore);
        assert_eq!(w.on_ack(1), AckOutcome::Advanced);
        assert_eq!(w.on_ack(1), AckOutcome::Ignore);
        assert_eq!(w.next_round(), 2..=2);
        assert_eq!(w.on_ack(3), AckOutcome::Ignore, "future ACK");
        assert_eq!(w.on_ack(2), AckOutcome::Advanced);
        assert_eq!(w.next_round(), 3..=3);
        assert_eq!(w.on_ack(3), AckOutcome::Advanced);
        assert_eq!(w.next_round(), 4..=4);
        assert_eq!(w.on_ack(4), AckOutcome::Done);
    }

    #[test]
    fn windowed_rounds_and_partial_acks() {
        let mut w = Window::new(10 * 100 + 5, 100, 4);
        assert_eq!(w.last_block(), 11);
        assert_eq!(w.next_round(), 1..=4);
        assert_eq!(w.on_ack(2), AckOutcome::Advanced, "block 3 was lost");
        assert_eq!(w.next_round(), 3..=6);
        assert_eq!(w.on_ack(2), AckOutcome::Resend, "first duplicate resends");
        assert_eq!(w.on_ack(2), AckOutcome::Ignore, "later ones do not");
        assert_eq!(w.on_ack(6), AckOutcome::Advanced);
        assert_eq!(w.next_round(), 7..=10);
        assert_eq!(w.on_ack(10), AckOutcome::Advanced);
        assert_eq!(w.next_round(), 11..=11);
        assert_eq!(w.on_ack(11), AckOutcome::Done);
    }

    #[test]
    fn block_numbers_roll_over_to_zero() {
        assert_eq!(wire_block(65535), 65535);
        assert_eq!(wire_block(65536), 0);
        assert_eq!(wire_block(65537), 1);
        let mut w = Window::new(70_000 * 512, 512, 1);
        for b in 1..=70_000u64 {
            assert_eq!(w.next_round(), b..=b);
            assert_eq!(w.on_ack(wire_block(b)), AckOutcome::Advanced, "block {b}");
        }
        assert_eq!(w.next_round(), 70_001..=70_001);
        assert_eq!(w.on_ack(wire_block(70_001)), AckOutcome::Done);
    }

    #[test]
    fn stale_ack_from_before_the_rollover_is_ignored() {
        let mut w = Window::new(70_000 * 512, 512, 1);
        for b in 1..=65_536u64 {
            w.next_round();
            w.on_ack(wire_block(b));
        }
        assert_eq!(w.acked(), 65_536);
        w.next_round();
        assert_eq!(w.on_ack(65535), AckOutcome::Ignore);
        assert_eq!(w.acked(), 65_536);
    }

    #[test]
    fn timeouts_halve_the_window_until_an_ack_moves_it() {
        let mut w = Window::new(10_000_000, 1468, 64);
        assert_eq!(w.next_round(), 1..=64);
        let mut sent = 64;
        for _ in 0..20 {
            w.on_timeout();
            let r = w.next_round();
            assert_eq!(*r.start(), 1, "resend from the first unacknowledged block");
            sent += r.count();
        }
        assert!(sent < 2 * 64 + 20, "{sent} blocks for no ACK at all");
        assert_eq!(w.next_round(), 1..=1);
        assert_eq!(w.on_ack(1), AckOutcome::Advanced);
        assert_eq!(w.next_round(), 2..=65, "whole again after an advance");
        assert_eq!(w.on_ack(30), AckOutcome::Advanced);
        w.on_timeout();
        assert_eq!(
            w.next_round(),
            31..=62,
            "from the first unacknowledged block"
        );
    }

    #[test]
    fn an_ack_for_a_block_of_a_larger_earlier_round_counts() {
        // Blocks 1-4 went out, the ACK of 3 came late, after a timeout's halved round.
        let mut w = Window::new(100 * 512, 512, 4);
        assert_eq!(w.next_round(), 1..=4);
        w.on_timeout();
        assert_eq!(w.next_round(), 1..=2);
        assert_eq!(w.on_ack(3), AckOutcome::Advanced);
        assert_eq!(w.next_round(), 4..=7);
    }

    proptest! {
        #[test]
        fn acked_never_passes_what_was_sent(
            size in 0u64..100_000,
            blk in 8u16..2048,
            win in 1u16..20,
            // An ACK's wire block, or `None` for a timeout.
            events in prop::collection::vec(prop::option::weighted(0.8, any::<u16>()), 0..200),
        ) {
            let mut w = Window::new(size, blk, win);
            let mut round = w.next_round();
            let mut highest_sent = *round.end();
            for e in events {
                let before = w.acked();
                let Some(a) = e else {
                    w.on_timeout();
                    round = w.next_round();
                    highest_sent = highest_sent.max(*round.end());
                    prop_assert!(*round.start() == w.acked() + 1);
                    prop_assert!(round.clone().count() as u64 >= 1);
                    continue;
                };
                match w.on_ack(a) {
                    AckOutcome::Done => {
                        prop_assert_eq!(w.acked(), w.last_block());
                        break;
                    }
                    AckOutcome::Advanced => {
                        round = w.next_round();
                        highest_sent = highest_sent.max(*round.end());
                    }
                    AckOutcome::Resend | AckOutcome::Ignore => {
                        prop_assert_eq!(w.acked(), before)
                    }
                }
                prop_assert!(w.acked() <= highest_sent);
                prop_assert!(*round.start() == w.acked() + 1);
            }
        }
    }
}

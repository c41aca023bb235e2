//! What the sink makes of the sequence numbers it sees, per stream: unique
//! packets, duplicates, reordering, and (given what was sent) loss.
//!
//! A packet is *reordered* when it arrives after a packet of its stream
//! with a higher sequence number (RFC 4737's "reordered" singleton: its
//! sequence number is below the next expected one). A duplicate is counted
//! once per extra copy and never as reordered. Loss is what was sent minus
//! the unique packets received.

use serde::Serialize;

/// Highest sequence number a stream may use: the bitmap of seen numbers
/// stays at most 16 MiB per stream.
pub const MAX_SEQ: u64 = (1 << 27) - 1;

/// What happened to one arriving packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Higher than every earlier one of its stream.
    InOrder,
    /// First copy, but after a higher sequence number.
    Reordered,
    /// Seen before.
    Duplicate,
    /// Above [`MAX_SEQ`]: not tracked.
    OutOfRange,
}

/// Counters of one stream.
#[derive(Debug, Clone, Default)]
pub struct StreamAccount {
    seen: Vec<u64>,
    highest: Option<u64>,
    received: u64,
    duplicates: u64,
    reordered: u64,
    out_of_range: u64,
}

impl StreamAccount {
    /// Counts one arrival.
    pub fn record(&mut self, seq: u64) -> Arrival {
        if seq > MAX_SEQ {
            self.out_of_range += 1;
            return Arrival::OutOfRange;
        }
        let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
        let bit = 1u64 << (seq % 64);
        if word >= self.seen.len() {
            // Doubling keeps the amortised cost per packet constant.
            let want = (word + 1).max(self.seen.len() * 2);
            self.seen.resize(want, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.seen[word] |= bit;
        self.received += 1;
        match self.highest {
            Some(h) if seq < h => {
                self.reordered += 1;
                Arrival::Reordered
            }
            _ => {
                self.highest = Some(seq);
                Arrival::InOrder
            }
        }
    }

    /// Unique packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The totals of this stream, with loss against `sent` if known.
    pub fn totals(&self, sent: Option<u64>) -> Totals {
        Totals {
            received: self.received,
            duplicates: self.duplicates,
            reordered: self.reordered,
            out_of_range: self.out_of_range,
            // Without the sender's count, the gaps below the highest number
            // seen are a lower bound.
            lost: match sent {
                Some(sent) => sent.saturating_sub(self.received),
                None => self
                    .highest
                    .map_or(0, |h| (h + 1).saturating_sub(self.received)),
            },
        }
    }
}

/// Counters of one or all streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Totals {
    /// Unique packets received.
    pub received: u64,
    /// Extra copies received.
    pub duplicates: u64,
    /// Unique packets that arrived after a higher number of their stream.
    pub reordered: u64,
    /// Packets with numbers above [`MAX_SEQ`], not tracked.
    pub out_of_range: u64,
    /// Sent and never received (or, without the sender's count, the gaps
    /// below the highest number seen).
    pub lost: u64,
}

impl std::ops::Add for Totals {
    type Output = Totals;
    fn add(self, o: Totals) -> Totals {
        Totals {
            received: self.received + o.received,
            duplicates: self.duplicates + o.duplicates,
            reordered: self.reordered + o.reordered,
            out_of_range: self.out_of_range + o.out_of_range,
            lost: self.lost + o.lost,
        }
    }
}

/// The streams of one sink, indexed by stream id.
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    streams: Vec<StreamAccount>,
}

/// Most streams a sink tracks (a generator has one per TX queue).
pub const MAX_STREAMS: usize = 1024;

impl Accounting {
    /// Counts one arrival; `None` if `stream` is beyond [`MAX_STREAMS`].
    pub fn record(&mut self, stream: u16, seq: u64) -> Option<Arrival> {
        let i = usize::from(stream);
        if i >= MAX_STREAMS {
            return None;
        }
        if i >= self.streams.len() {
            self.streams.resize_with(i + 1, StreamAccount::default);
        }
        Some(self.streams[i].record(seq))
    }

    /// Unique packets received per stream.
    pub fn received_per_stream(&self) -> Vec<u64> {
        self.streams.iter().map(StreamAccount::received).collect()
    }

    /// Totals over all streams; with `sent` (per stream, as the generator
    /// reports it) loss is exact, streams the sink never saw count as
    /// wholly lost.
    pub fn totals(&self, sent: Option<&[u64]>) -> Totals {
        let n = self.streams.len().max(sent.map_or(0, <[u64]>::len));
        let empty = StreamAccount::default();
        (0..n)
            .map(|i| {
                let account = self.streams.get(i).unwrap_or(&empty);
                let sent = sent.map(|s| s.get(i).copied().unwrap_or(0));
                account.totals(sent)
            })
            .fold(Totals::default(), |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_reorder_and_duplicates_from_a_crafted_sequence() {
        // Sent 0..=9; 5 and 6 lost, 3 late (after 4), 3 again, 8 before 7.
        let mut s = StreamAccount::default();
        let arrivals: Vec<Arrival> = [0, 1, 2, 4, 3, 3, 8, 7, 9]
            .into_iter()
            .map(|seq| s.record(seq))
            .collect();
        use Arrival::*;
        assert_eq!(
            arrivals,
            [
                InOrder, InOrder, InOrder, InOrder, Reordered, Duplicate, InOrder, Reordered,
                InOrder
            ]
        );
        let t = s.totals(Some(10));
        assert_eq!(
            t,
            Totals {
                received: 8,
                duplicates: 1,
                reordered: 2,
                out_of_range: 0,
                lost: 2
            }
        );
        // Without the sender's count: the gaps below 9.
        assert_eq!(s.totals(None).lost, 2);
        // Trailing loss is only visible with the sender's count.
        assert_eq!(s.totals(Some(12)).lost, 4);
    }

    #[test]
    fn streams_are_counted_apart_and_missing_streams_are_lost() {
        let mut a = Accounting::default();
        for seq in 0..5 {
            assert_eq!(a.record(0, seq), Some(Arrival::InOrder));
        }
        // Stream 1's 0..5 in reverse: each after a higher one but the first.
        for seq in (0..5).rev() {
            a.record(1, seq);
        }
        assert_eq!(a.received_per_stream(), [5, 5]);
        let t = a.totals(Some(&[5, 5, 3]));
        assert_eq!((t.received, t.reordered, t.lost), (10, 4, 3));
        assert_eq!(a.record(u16::MAX, 0), None);
    }

    #[test]
    fn huge_sequence_numbers_are_refused_not_allocated() {
        let mut s = StreamAccount::default();
        assert_eq!(s.record(MAX_SEQ + 1), Arrival::OutOfRange);
        assert_eq!(s.record(u64::MAX), Arrival::OutOfRange);
        assert_eq!(s.totals(None).out_of_range, 2);
        assert_eq!(s.record(MAX_SEQ), Arrival::InOrder);
        assert_eq!(s.record(0), Arrival::Reordered);
    }
}

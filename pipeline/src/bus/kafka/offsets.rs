//! Which offsets may be committed: the lowest one a sink has not yet confirmed, per partition.

use std::collections::{BTreeSet, HashMap};

use rdkafka::{Offset, TopicPartitionList};

/// Per partition: offsets handed out and not yet settled. The committable
/// offset is the lowest unsettled one (or one past the highest seen).
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), Partition>,
    epoch: u64,
}

#[derive(Debug)]
struct Partition {
    epoch: u64,
    pending: BTreeSet<i64>,
    next: i64,
    committed: i64,
}

/// Identifies one handed-out offset, including the assignment epoch so a
/// confirmation that arrives after its partition was revoked is ignored.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) epoch: u64,
}

impl OffsetTracker {
    /// Records that `offset` was handed out.
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64) -> Ticket {
        let key = (topic.to_string(), partition);
        let epoch = match self.partitions.get_mut(&key) {
            Some(p) => {
                p.pending.insert(offset);
                p.next = p.next.max(offset + 1);
                p.epoch
            }
            None => {
                self.epoch += 1;
                self.partitions.insert(
                    key,
                    Partition {
                        epoch: self.epoch,
                        pending: BTreeSet::from([offset]),
                        next: offset + 1,
                        committed: offset,
                    },
                );
                self.epoch
            }
        };
        Ticket {
            topic: topic.to_string(),
            partition,
            offset,
            epoch,
        }
    }

    /// Marks the ticket's offset done; returns the new commit position of
    /// its partition if it advanced.
    pub fn finish(&mut self, ticket: &Ticket) -> Option<i64> {
        let p = self
            .partitions
            .get_mut(&(ticket.topic.clone(), ticket.partition))?;
        if p.epoch != ticket.epoch {
            return None;
        }
        p.pending.remove(&ticket.offset);
        let position = p.pending.first().copied().unwrap_or(p.next);
        (position > p.committed).then(|| {
            p.committed = position;
            position
        })
    }

    /// Forgets revoked partitions; returns their last commit positions.
    pub fn revoke(&mut self, revoked: &[(String, i32)]) -> Vec<(String, i32, i64)> {
        revoked
            .iter()
            .filter_map(|key| {
                let p = self.partitions.remove(key)?;
                let position = p.pending.first().copied().unwrap_or(p.next);
                Some((key.0.clone(), key.1, position))
            })
            .collect()
    }

    /// Commit positions of every partition (shutdown).
    pub fn positions(&self) -> Vec<(String, i32, i64)> {
        self.partitions
            .iter()
            .map(|((t, part), p)| {
                (
                    t.clone(),
                    *part,
                    p.pending.first().copied().unwrap_or(p.next),
                )
            })
            .collect()
    }
}

pub(super) fn tpl(positions: &[(String, i32, i64)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in positions {
        // Offsets were produced by this consumer for this partition; adding
        // cannot fail for a valid offset.
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    list
}

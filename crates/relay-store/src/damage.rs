//! Test-only fault injection (feature `testing`): a stored body that went
//! bad after it was applied, as a flipped bit on disk or in memory leaves
//! it. Production builds of `relayd` never call this.

use relay_types::MessageId;

use crate::db::CF_BODIES;
use crate::error::StoreError;
use crate::state_machine::StateMachine;

impl StateMachine {
    /// Flips one bit in the middle of this replica's stored body of `id`,
    /// leaving its record (and the checksum in it) alone. `false` if the
    /// message has no (or an empty) body here.
    pub fn damage_body(&self, id: &MessageId) -> Result<bool, StoreError> {
        let Some(body) = self.body(id)?.filter(|b| !b.is_empty()) else {
            return Ok(false);
        };
        let mut damaged = body.to_vec();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x01;
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(self.store.cf(CF_BODIES)?, id.as_bytes(), damaged);
        self.store.write(batch)?;
        Ok(true)
    }
}

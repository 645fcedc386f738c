//! A message's bytes with holes: built once per run by a protocol module, then
//! rendered for every message by copying the fixed bytes and writing each key
//! and value into its hole. Rendering never allocates once the output buffer
//! has grown to its working size; this is what keeps the hot loop lean.

use crate::workload::Plan;

/// Where one hole lies and which request's key or SET's value fills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hole {
    offset: usize,
    source: usize,
}

/// Fixed bytes plus key and value holes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    bytes: Vec<u8>,
    keys: Vec<Hole>,
    values: Vec<Hole>,
    key_bytes: usize,
    value_bytes: usize,
}

impl Template {
    pub fn new(key_bytes: usize, value_bytes: usize) -> Template {
        Template {
            key_bytes,
            value_bytes,
            ..Template::default()
        }
    }

    /// The buffer the protocol module writes fixed bytes into.
    pub fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Appends a key hole filled by request `op`'s key.
    pub fn key_hole(&mut self, op: usize) {
        self.keys.push(Hole {
            offset: self.bytes.len(),
            source: op,
        });
        self.bytes.resize(self.bytes.len() + self.key_bytes, b'?');
    }

    /// Appends a value hole filled by write `write`'s value.
    pub fn value_hole(&mut self, write: usize) {
        self.values.push(Hole {
            offset: self.bytes.len(),
            source: write,
        });
        self.bytes.resize(self.bytes.len() + self.value_bytes, b'?');
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends the message `plan` describes to `out`.
    pub fn render(&self, plan: &Plan, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let message = &mut out[start..];
        for hole in &self.keys {
            plan.write_key(
                hole.source,
                &mut message[hole.offset..hole.offset + self.key_bytes],
            );
        }
        for hole in &self.values {
            let end = hole.offset + self.value_bytes;
            plan.write_value(hole.source, &mut message[hole.offset..end]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ConnKeys;
    use crate::workload::{Shape, WriteOp};

    #[test]
    fn render_fills_every_hole_and_keeps_fixed_bytes() {
        let shape = Shape {
            writes: 1,
            gets: 1,
            write_op: WriteOp::Set,
            atomic: false,
            key_bytes: 16,
            value_bytes: 4,
        };
        let mut template = Template::new(shape.key_bytes, shape.value_bytes);
        template.bytes_mut().push(b'<');
        template.key_hole(1);
        template.bytes_mut().push(b'|');
        template.value_hole(0);
        template.bytes_mut().push(b'>');
        let mut plan = Plan::default();
        plan.fill(&shape, &ConnKeys::new(0, 1, 10, 0), 0, 0);
        plan.keys[1] = 0x1f;
        plan.values[0] = 0xbeef_0000_0000_0000;
        let mut out = b"prev".to_vec();
        template.render(&plan, &mut out);
        assert_eq!(out, b"prev<key-00000000001f|beef>");
        assert_eq!(template.len(), 1 + 16 + 1 + 4 + 1);
    }
}

//! Fuzzes what a peer can send over the wire: prost decoding of `Task` (aggregator → site) and
//! `TaskResult` (site → aggregator) followed by the domain `TryFrom` conversion at the edge.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(task) = protocol::pb::Task::decode(data) {
        let _ = federation::task::Task::try_from(task);
    }
    if let Ok(result) = protocol::pb::TaskResult::decode(data) {
        let _ = federation::task::TaskResult::try_from(result);
    }
    if let Ok(req) = protocol::pb::PushResultRequest::decode(data)
        && let Some(result) = req.result
    {
        let _ = federation::task::TaskResult::try_from(result);
    }
});

//! What the engines tell the control plane, and what it asks of them: plain
//! data carried over the lock-free rings between the shards (and the ACD
//! thread) and the control plane's thread, which turns it into CTI JSON.

use crate::acd::AgentState;
use crate::crm::Contact;

use super::proto::{Data, ProtoError, RecordAction};

/// Something that happened to a call, told by the shard that owns it (so
/// a call's events arrive in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    pub kind: CallEventKind,
    /// The call's CTI id (= its record id, `GET /v1/calls/{id}`).
    pub call: String,
    /// The owning shard's key for the call (commands are addressed by it).
    pub key: u64,
    /// The call this one came from (a consultation's or a callback's
    /// original call).
    pub parent: Option<String>,
    /// The queue the call is (or was last) in.
    pub queue: Option<String>,
    /// The agent (or user) on the appliance's side of the call.
    pub agent: Option<String>,
    /// The caller's number (From user part).
    pub ani: String,
    /// The number dialled.
    pub dnis: String,
    pub data: Data,
    /// Wall clock, unix ms.
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEventKind {
    /// Offered to `agent` by the ACD: the screen pop.
    Offered {
        wait_ms: u64,
        contact: Option<Box<Contact>>,
    },
    /// The agent's phone is ringing.
    Ringing,
    /// Connected to the agent (or the called user).
    Established,
    Held,
    Retrieved,
    /// Moved to `to` (blind transfer).
    Transferred {
        to: String,
    },
    /// A conference formed (`call.conference`) or a party left it:
    /// `parties` are those in it now (the customer's number first, then
    /// the users); fewer than three is an ordinary call again.
    Conferenced {
        parties: Vec<String>,
    },
    /// A DTMF digit from the caller.
    Dtmf {
        digit: char,
    },
    /// The call's recording paused (false) or resumed (true).
    Recording {
        on: bool,
    },
    /// Attached data changed (the event's `data` is the whole set).
    DataSet,
    /// The call ended; `cause` as in the call record.
    Cleared {
        cause: String,
    },
}

impl CallEventKind {
    /// The event's `type` on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            CallEventKind::Offered { .. } => "call.offered",
            CallEventKind::Ringing => "call.ringing",
            CallEventKind::Established => "call.established",
            CallEventKind::Held => "call.held",
            CallEventKind::Retrieved => "call.retrieved",
            CallEventKind::Transferred { .. } => "call.transferred",
            CallEventKind::Conferenced { .. } => "call.conferenced",
            CallEventKind::Dtmf { .. } => "call.dtmf",
            CallEventKind::Recording { .. } => "call.recording",
            CallEventKind::DataSet => "call.data",
            CallEventKind::Cleared { .. } => "call.cleared",
        }
    }
}

/// An agent's state changed (from the ACD thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEvent {
    pub agent: String,
    pub state: AgentState,
    pub reason: Option<u16>,
    pub at_ms: i64,
}

/// A command for the shard owning call `key` (or, for [`CallOp::Make`],
/// the shard chosen to place it). `req` pairs the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallCommand {
    pub req: u64,
    pub key: u64,
    pub op: CallOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOp {
    /// `call.answer`: ask the ringing phones to answer by themselves.
    Answer,
    Hangup,
    Hold,
    Retrieve,
    Transfer {
        to: String,
    },
    /// `call.consult`: the agent rings user `to`, the customer holds.
    Consult {
        to: String,
    },
    /// `call.transfer_complete`: the customer goes to the consulted party.
    ConsultComplete,
    /// `call.consult_cancel`.
    ConsultCancel,
    /// `call.conference`: the customer, the agent and the consulted party
    /// talk together.
    Conference,
    SendDtmf {
        digits: String,
    },
    SetData {
        data: Data,
    },
    Record {
        action: RecordAction,
    },
    /// Click-to-dial: ring `agent`'s phones (auto-answer asked), then `to`.
    Make {
        agent: String,
        to: String,
        data: Data,
    },
    /// The CRM's answer to the call's screen-pop lookup (None: not found,
    /// failed or timed out).
    Contact(Option<Box<Contact>>),
}

/// A shard's answer to a [`CallCommand`]: `Ok(Some(call id))` for a call
/// it created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallReply {
    pub req: u64,
    pub result: Result<Option<String>, ProtoError>,
}

/// What a shard hands the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToControl {
    Event(Box<CallEvent>),
    Reply(CallReply),
    /// Look the caller of call `key` up in the CRM (`crm.lookup.url`);
    /// the answer comes back as [`CallOp::Contact`].
    Lookup {
        key: u64,
        number: Option<String>,
        account: Option<String>,
    },
}

/// What the control plane tells the record writer, so that a queue call's
/// record waits for its agent's wrap-up ([`crate::call::wrapup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToRecords {
    /// `call.wrap_up` for call `call`.
    WrapUp {
        call: String,
        disposition: String,
        notes: String,
    },
    /// An agent's state changed.
    Agent {
        agent: String,
        in_wrap_up: bool,
        at_ms: i64,
    },
}

//! The daemon end to end, with real parts only: mosquitto, mosquitto_sub, libpcap reading
//! real captures, and plugins built from `plugins/` running in wasmtime.

mod canary;
mod consent;
mod containment;
mod errors;
mod expect;
mod harness;
mod occupancy;
mod outbox;
mod precompiled;
mod reload;
mod replay;
mod rotation;
mod tail;
mod tls;

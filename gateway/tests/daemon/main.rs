//! The daemon end to end, with real parts only: mosquitto, mosquitto_sub, libpcap reading
//! real captures, and plugins built from `plugins/` running in wasmtime.

mod aggregates;
mod bundle_attacks;
mod bundles;
mod canary;
mod chain;
mod consent;
mod containment;
mod coupon;
mod cplugin;
mod devkit;
mod errors;
mod expect;
mod fairness;
mod harness;
mod joins;
mod latency;
mod limits;
mod logs;
mod occupancy;
mod optional;
mod outbox;
mod precompiled;
mod protocol;
mod reload;
mod replay;
mod rotation;
mod stop;
mod tail;
mod tls;
mod uci;
mod visits;

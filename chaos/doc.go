// Package chaos runs scripted fault scenarios against the real hub binary
// and accounts for every event in a Ledger: published, acknowledged
// (PubAck'd), delivered per subscription (distinct), duplicates, lost (must
// be 0) and dead-lettered with reasons.
//
// The scenarios are the package's tests. Each builds nothing of its own:
// TestMain builds cmd/hub once, and each scenario starts it as a
// subprocess (`hub serve`) with its own config, store dir, webhook
// receivers (Receiver, which counts deliveries by webhook-id and can go
// down, stall or answer slowly) and, for email, an in-process SMTP server
// (subscribers/email/smtptest). Faults are injected from outside the way
// they happen in production: SIGKILL of the hub (alone, or the stream
// leader of a 3-node cluster), a receiver whose port refuses connections,
// an SMTP relay answering 451, a template that cannot render, a receiver
// slower than AckWait, a receiver that stops answering.
//
// `make test` runs the short scenarios (one SIGKILL cycle over 5,000
// events, backpressure over 10,000); `make chaos` (HUB_CHAOS=1) runs the
// full set, about 6 minutes on 2 cores. HUB_CHAOS_LEDGERS=dir writes each
// ledger as dir/<scenario>.json, HUB_CHAOS_LOGS=dir keeps the hubs' logs,
// HUB_CHAOS_BIN=path tests an existing binary. docs/reliability.md holds
// the ledgers of a full run.
package chaos

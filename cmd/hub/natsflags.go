package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/config"
)

// natsFlags are the connection flags every client command shares.
type natsFlags struct {
	server   *string
	user     *string
	password *string
	creds    *string
	nkey     *string
	tlsCA    *string
}

func addNATSFlags(fs *flag.FlagSet) *natsFlags {
	return &natsFlags{
		server:   fs.String("server", "nats://127.0.0.1:4222", "NATS URL of the hub (several comma-separated)"),
		user:     fs.String("user", os.Getenv("HUB_NATS_USER"), "NATS user (default $HUB_NATS_USER)"),
		password: fs.String("password", "", "NATS password (default $HUB_NATS_PASSWORD; prefer the variable: flags show in ps)"),
		creds:    fs.String("creds", "", "NATS credentials file"),
		nkey:     fs.String("nkey", "", "file holding an nkey seed (SU...)"),
		tlsCA:    fs.String("tlsca", "", "CA certificate (PEM) that signed the hub's NATS TLS certificate"),
	}
}

// connect opens the connection. A named user gets the private inbox
// prefix its role allows (_INBOX_<user>), so request replies and JetStream
// acks reach it.
func (f *natsFlags) connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name(name)}
	if u := *f.user; u != "" {
		pw := *f.password
		if pw == "" {
			pw = os.Getenv("HUB_NATS_PASSWORD")
		}
		opts = append(opts, nats.UserInfo(u, pw), nats.CustomInboxPrefix("_INBOX_"+u))
	}
	if *f.creds != "" {
		opts = append(opts, nats.UserCredentials(*f.creds))
	}
	if *f.nkey != "" {
		o, err := nats.NkeyOptionFromSeed(*f.nkey)
		if err != nil {
			return nil, fmt.Errorf("-nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if *f.tlsCA != "" {
		opts = append(opts, nats.RootCAs(*f.tlsCA))
	}
	nc, err := nats.Connect(*f.server, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", config.RedactURLs(*f.server), err)
	}
	return nc, nil
}

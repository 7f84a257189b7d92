package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/subscribers/audit"
)

// runAudit: hub audit verify, which walks the hash chain of the audit file.
func runAudit(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		return fmt.Errorf("%w: hub audit verify [-file FILE | -config FILE] [-json]", errUsage)
	}
	fs := newFlags("audit verify", stderr)
	file := fs.String("file", "", "audit file to check (default: channels.audit.file of -config)")
	cfgPath := fs.String("config", "configs/hub.yaml", "configuration file naming the audit file")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: unexpected argument %q (use -file)", errUsage, fs.Arg(0))
	}
	path := *file
	if path == "" {
		cfg, err := node.Load(*cfgPath)
		if err != nil {
			return fmt.Errorf("%s is invalid (or give -file):\n%w", *cfgPath, err)
		}
		if path = auditFile(cfg); path == "" {
			return fmt.Errorf("%s sets no channels.audit.file; give -file", *cfgPath)
		}
	}
	rep, err := audit.VerifyFile(path)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(stdout, rep)
	}
	if !rep.OK() {
		return errors.New("the audit chain is broken")
	}
	return nil
}

// printReport writes the verdict first, then the details.
func printReport(w io.Writer, rep audit.Report) {
	switch b := rep.Break; {
	case b == nil:
		fmt.Fprintf(w, "audit chain OK: %d records\n", rep.Records)
	case b.Seq == 0:
		fmt.Fprintf(w, "audit chain BROKEN at line %d: %s\n", b.Line, b.Reason)
	default:
		fmt.Fprintf(w, "audit chain BROKEN at line %d (seq %d): %s\n", b.Line, b.Seq, b.Reason)
	}
	if rep.Break != nil && rep.Records > 0 {
		fmt.Fprintf(w, "  %d records before it verify (seq %d-%d)\n", rep.Records, rep.FirstSeq, rep.LastSeq)
	}
	for _, r := range rep.Repairs {
		fmt.Fprintf(w, "  repair at line %d (seq %d): %d torn bytes truncated at offset %d after a crash\n", r.Line, r.Seq, r.TruncatedBytes, r.TruncatedAt)
	}
	if t := rep.TornTail; t != nil {
		fmt.Fprintf(w, "  torn tail at line %d: %d bytes without a newline (a write cut short; the hub truncates it when it starts)\n", t.Line, t.Bytes)
	}
	if rep.Break == nil && rep.Records > 0 {
		// Kept elsewhere, this detects a later truncation of the file.
		fmt.Fprintf(w, "  last record: seq %d, hash %s\n", rep.LastSeq, rep.LastHash)
	}
}

// auditFile is cfg.Channels.Audit.File. It is looked up by name so this
// command builds before node.ChannelsConfig has its Audit section; once it
// has, this can be `return cfg.Channels.Audit.File`.
func auditFile(cfg node.Config) string { return cfg.Channels.Audit.File }

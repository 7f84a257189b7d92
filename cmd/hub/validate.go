package main

import (
	"context"
	"fmt"
	"io"

	"github.com/hubproject/hub/hub/node"
)

func runValidate(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", stderr)
	cfgPath := fs.String("config", "configs/hub.yaml", "configuration file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 1 {
		*cfgPath = fs.Arg(0)
	} else if fs.NArg() > 1 {
		return fmt.Errorf("%w: at most one config file", errUsage)
	}
	cfg, err := node.Load(*cfgPath)
	if err != nil {
		return fmt.Errorf("%s is invalid:\n%w", *cfgPath, err)
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stdout, "warning: "+w)
	}
	fmt.Fprintln(stdout, "configuration is valid")
	return nil
}

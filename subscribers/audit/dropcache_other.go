//go:build !linux

package audit

import "os"

// dropCache is a no-op where posix_fadvise is not wired up.
func dropCache(*os.File, int64, int64) {}

func startWriteback(*os.File, int64, int64) {}

func datasync(f *os.File) error { return f.Sync() }

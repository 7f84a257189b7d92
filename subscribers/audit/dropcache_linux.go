package audit

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCache tells the kernel the file's pages in [off, off+n) will not be
// read again. Only clean (synced) pages are dropped; failing is harmless.
func dropCache(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.Fadvise(int(fd), off, n, unix.FADV_DONTNEED)
	})
}

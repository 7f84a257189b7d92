package audit

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCache tells the kernel the file's pages in [off, off+n) will not be
// read again. Only clean (synced) pages are dropped; failing is harmless.
func dropCache(f *os.File, off, n int64) {
	_ = withFd(f, func(fd int) error { return unix.Fadvise(fd, off, n, unix.FADV_DONTNEED) })
}

// startWriteback starts writing [off, off+n) to disk without waiting.
func startWriteback(f *os.File, off, n int64) {
	_ = withFd(f, func(fd int) error { return unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WRITE) })
}

// datasync is fdatasync: the data and the size, not the times.
func datasync(f *os.File) error {
	return withFd(f, func(fd int) error {
		for {
			if err := unix.Fdatasync(fd); err != unix.EINTR {
				return err
			}
		}
	})
}

// withFd runs call on f's descriptor (kept open meanwhile).
func withFd(f *os.File, call func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var callErr error
	if err := rc.Control(func(fd uintptr) { callErr = call(int(fd)) }); err != nil {
		return err
	}
	return callErr
}

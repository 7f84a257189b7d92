package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// chainFile is the append-only JSONL file. Only the writer goroutine uses
// it; its syncer goroutine (startSyncer) fsyncs in the background.
type chainFile struct {
	f        *os.File
	path     string
	size     int64 // bytes written and known good
	dirty    bool  // written since the last sync request
	lastSync time.Time

	// The syncer fsyncs up to the latest requested size, then drops the
	// synced pages from the page cache: nothing reads the file back while
	// the hub runs (verify reads it from disk), and a busy trail would
	// otherwise grow the page cache by its whole size, pushing the hub's
	// working set out. Off the writer, a slow disk delays only durability,
	// never the records (nor, with wait_stored, the acks waiting on them).
	syncWant atomic.Int64
	// Every writebackChunk appended, the syncer starts writing it back
	// (sync_file_range), as RocksDB's bytes_per_sync does: the periodic
	// fdatasync then finds little left and no longer stalls the disk, and
	// the hub with it, for milliseconds five times a second.
	wbWant     atomic.Int64 // write-back asked up to here
	wbAsked    int64        // the writer's copy of wbWant
	syncWake   chan struct{}
	syncStop   chan struct{}
	syncDone   chan struct{}
	syncFailed func(error)
}

// recovery is what openChainFile found at the end of the file.
type recovery struct {
	chain chain
	// torn tail that was truncated (zero Bytes: none)
	tornBytes  int64
	tornAt     int64
	tornSHA256 string
	// completed: the tail was a whole record missing only its newline.
	completed bool
	// restart: the last line was unreadable, so the chain restarts.
	restart error
}

// maxCompletable bounds the torn tail read back to see whether it is a
// whole record (records hold one event, at most 64 MiB).
const maxCompletable = 80 << 20

// openChainFile opens (or creates) the file and finds where the chain
// continues. A torn tail (bytes after the last newline, left by a crash
// mid-write) is truncated, unless it is a whole valid next record that
// only lacks its newline, which is completed instead.
func openChainFile(path string) (*chainFile, recovery, error) {
	var rec recovery
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, rec, fmt.Errorf("audit file: %w", err)
		}
	}
	// 0600: records can hold personal data that was not redacted.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, rec, fmt.Errorf("audit file: %w", err)
	}
	cf := &chainFile{f: f, path: path, lastSync: time.Now()}
	fail := func(err error) (*chainFile, recovery, error) {
		f.Close()
		return nil, rec, fmt.Errorf("audit file %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	size := st.Size()
	last, lastEnd, err := readTail(f, size)
	if err != nil {
		return fail(err)
	}
	if last != nil {
		li, perr := parseLine(last)
		switch {
		case li.Seq != nil && (len(li.Hash) == b64Len || len(li.Hash) == hexLen):
			// Continue from it even if its own hash is wrong: verify names
			// that record, and the chain after it stays checkable. (A hash
			// that is not a SHA-256 at all cannot be chained to.)
			rec.chain = newChain(*li.Seq, canonicalHash(li.Hash))
		default:
			rec.restart = perr
		}
	}
	if torn := size - lastEnd; torn > 0 {
		var tail []byte
		if torn <= maxCompletable {
			tail = make([]byte, torn)
			if _, err := f.ReadAt(tail, lastEnd); err != nil {
				return fail(err)
			}
		}
		if li, err := parseLine(tail); tail != nil && err == nil && rec.restart == nil && *li.Seq == rec.chain.seq+1 && canonicalHash(*li.Prev) == rec.chain.prevString() {
			if _, err := f.Write([]byte{'\n'}); err != nil {
				return fail(err)
			}
			rec.chain = newChain(*li.Seq, canonicalHash(li.Hash))
			rec.completed = true
			size++
		} else {
			h := sha256.New()
			if _, err := io.Copy(h, io.NewSectionReader(f, lastEnd, torn)); err != nil {
				return fail(err)
			}
			rec.tornBytes, rec.tornAt, rec.tornSHA256 = torn, lastEnd, hex.EncodeToString(h.Sum(nil))
			if err := f.Truncate(lastEnd); err != nil {
				return fail(err)
			}
			size = lastEnd
		}
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	cf.size = size
	return cf, rec, nil
}

// readTail returns the last complete line (without its newline; nil when
// there is none) and the offset just after its newline, where a torn tail
// would start.
func readTail(f *os.File, size int64) (line []byte, end int64, err error) {
	const chunk = 64 << 10
	var buf []byte // the bytes from off to size
	off := size
	lastNL := int64(-1)
	for off > 0 {
		n := min(chunk, off)
		off -= n
		b := make([]byte, n, int(n)+len(buf))
		if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, err
		}
		buf = append(b, buf...)
		if lastNL < 0 {
			i := bytes.LastIndexByte(buf, '\n')
			if i < 0 {
				continue
			}
			lastNL = off + int64(i)
		}
		rel := lastNL - off
		if j := bytes.LastIndexByte(buf[:rel], '\n'); j >= 0 {
			return buf[j+1 : rel], lastNL + 1, nil
		}
	}
	if lastNL < 0 {
		return nil, 0, nil // no complete line: all of it is torn
	}
	return buf[:lastNL], lastNL + 1, nil
}

// write appends whole lines. On a failed or short write the file is cut
// back, so it never holds a partial line the writer itself left.
func (cf *chainFile) write(b []byte) error {
	n, err := cf.f.Write(b)
	if err != nil {
		if n > 0 {
			_ = cf.f.Truncate(cf.size)
		}
		return fmt.Errorf("audit file %s: %w", cf.path, err)
	}
	cf.size += int64(n)
	cf.dirty = true
	if cf.syncWake != nil && cf.size-cf.wbAsked >= writebackChunk {
		cf.wbAsked = cf.size
		cf.wbWant.Store(cf.size)
		select {
		case cf.syncWake <- struct{}{}:
		default:
		}
	}
	return nil
}

const writebackChunk = 1 << 20

// startSyncer starts the goroutine that fsyncs on requestSync; close
// stops it. failed is called (from that goroutine) when an fsync fails.
func (cf *chainFile) startSyncer(failed func(error)) {
	cf.syncWake = make(chan struct{}, 1)
	cf.syncStop = make(chan struct{})
	cf.syncDone = make(chan struct{})
	cf.syncFailed = failed
	go cf.syncLoop()
}

// requestSync asks the syncer to fsync what was written so far. It does
// not wait: a sync in progress takes the newest size when it is done.
func (cf *chainFile) requestSync() {
	if !cf.dirty {
		return
	}
	cf.dirty = false
	cf.lastSync = time.Now()
	cf.syncWant.Store(cf.size)
	select {
	case cf.syncWake <- struct{}{}:
	default: // already asked
	}
}

func (cf *chainFile) syncLoop() {
	defer close(cf.syncDone)
	var dropped int64 // pages before it are synced and dropped
	var wb int64      // write-back started up to here
	var synced int64  // fdatasynced up to here
	for {
		select {
		case <-cf.syncStop:
			return
		case <-cf.syncWake:
		}
		if w := cf.wbWant.Load(); w > wb {
			startWriteback(cf.f, wb, w-wb)
			wb = w
		}
		want := cf.syncWant.Load()
		if want <= synced {
			continue // woken for write-back only
		}
		if err := cf.syncTo(want, dropped); err != nil {
			cf.syncFailed(err)
			continue
		}
		synced = want
		dropped = want - want%pageSize // the partial last page goes next time
	}
}

var pageSize = int64(os.Getpagesize())

// syncTo fdatasyncs the file, then drops the now clean pages of
// [from, to) from the page cache.
func (cf *chainFile) syncTo(to, from int64) error {
	if err := datasync(cf.f); err != nil {
		return fmt.Errorf("audit file %s: fsync: %w", cf.path, err)
	}
	if to > from {
		dropCache(cf.f, from, to-from)
	}
	return nil
}

// close stops the syncer and fsyncs what is left.
func (cf *chainFile) close() error {
	if cf.syncStop != nil {
		close(cf.syncStop)
		<-cf.syncDone
		cf.syncStop = nil
	}
	cf.dirty = false
	err := cf.f.Sync()
	if err != nil {
		err = fmt.Errorf("audit file %s: fsync: %w", cf.path, err)
	}
	if cerr := cf.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("audit file %s: %w", cf.path, cerr)
	}
	return err
}

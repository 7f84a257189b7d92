package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// WebhookReceiver is a keep-alive HTTP server on 127.0.0.1 that answers
// every POST with 204 and records the delivery: subscription i posts to
// /s<i>, the body is the CloudEvent. Stop and Start take it down and bring
// it back on the same address (a receiver that is down refuses
// connections).
type WebhookReceiver struct {
	stats *ChannelStats
	addr  string
	mu    sync.Mutex
	srv   *http.Server
	done  chan struct{}
}

// StartWebhookReceiver starts a receiver for subs subscriptions.
func StartWebhookReceiver(rec *Recorder, subs int) (*WebhookReceiver, error) {
	w := &WebhookReceiver{stats: rec.Channel("webhook", subs), addr: "127.0.0.1:0"}
	if err := w.Start(); err != nil {
		return nil, err
	}
	return w, nil
}

// URL is subscription i's endpoint.
func (w *WebhookReceiver) URL(i int) string { return fmt.Sprintf("http://%s/s%d", w.addr, i) }

// Start serves again after Stop, on the same address.
func (w *WebhookReceiver) Start() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", w.addr)
	if err != nil {
		return fmt.Errorf("webhook receiver: %w", err)
	}
	w.addr = ln.Addr().String()
	w.srv = &http.Server{Handler: http.HandlerFunc(w.serve), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	w.done = make(chan struct{})
	go func(srv *http.Server, done chan struct{}) {
		defer close(done)
		_ = srv.Serve(ln)
	}(w.srv, w.done)
	return nil
}

// Stop closes the listener and every connection at once, as a crashed
// receiver would. It is safe to call twice.
func (w *WebhookReceiver) Stop() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.srv == nil {
		return nil
	}
	err := w.srv.Close()
	<-w.done
	w.srv = nil
	return err
}

func (w *WebhookReceiver) serve(rw http.ResponseWriter, r *http.Request) {
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	if _, err := buf.ReadFrom(r.Body); err != nil {
		rw.WriteHeader(http.StatusBadRequest)
		return
	}
	now := time.Now()
	sub, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/s"))
	if err != nil {
		sub = -1
	}
	id, sent, ok := ParseEnvelope(buf.Bytes())
	if !ok {
		w.stats.Record(-1, nil, now, now)
	} else {
		w.stats.Record(sub, id, sent, now)
	}
	rw.WriteHeader(http.StatusNoContent)
}

// SMSSink is a Twilio-shaped Messages API on 127.0.0.1: POST
// /2010-04-01/Accounts/{sid}/Messages.json with To=+1555000<i> and a Body
// of "<event id> <unix ns>" answers 201 with a message sid.
type SMSSink struct {
	stats *ChannelStats
	srv   *http.Server
	ln    net.Listener
	done  chan struct{}
}

// SMSPhone is the recipient of SMS subscription i.
func SMSPhone(i int) string { return fmt.Sprintf("+1555%07d", i) }

// StartSMSSink starts the sink for subs subscriptions.
func StartSMSSink(rec *Recorder, subs int) (*SMSSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("sms sink: %w", err)
	}
	s := &SMSSink{stats: rec.Channel("sms", subs), ln: ln, done: make(chan struct{})}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// BaseURL is the sink's address, for channels.sms.twilio.base_url.
func (s *SMSSink) BaseURL() string { return "http://" + s.ln.Addr().String() }

// Close stops the sink.
func (s *SMSSink) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}

func (s *SMSSink) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/Messages.json") {
		http.Error(w, `{"code":20404,"message":"not found"}`, http.StatusNotFound)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, `{"code":21000,"message":"bad form"}`, http.StatusBadRequest)
		return
	}
	now := time.Now()
	sub := -1
	if to := r.PostForm.Get("To"); strings.HasPrefix(to, "+1555") {
		if n, err := strconv.Atoi(to[5:]); err == nil {
			sub = n
		}
	}
	if id, sent, ok := parseIDNanos(r.PostForm.Get("Body")); ok {
		s.stats.Record(sub, id, sent, now)
	} else {
		s.stats.Record(-1, nil, now, now)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, `{"sid":"SMbench","status":"queued"}`)
}

// SMTPSink is a plain SMTP server (github.com/emersion/go-smtp) on
// 127.0.0.1 that accepts every message: subscription i mails
// s<i>@bench.example, the Subject is "<event id> <unix ns>".
type SMTPSink struct {
	stats *ChannelStats
	srv   *smtp.Server
	ln    net.Listener
	done  chan struct{}
}

// SMTPRecipient is the address of email subscription i.
func SMTPRecipient(i int) string { return fmt.Sprintf("s%d@bench.example", i) }

// StartSMTPSink starts the sink for subs subscriptions.
func StartSMTPSink(rec *Recorder, subs int) (*SMTPSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("smtp sink: %w", err)
	}
	s := &SMTPSink{stats: rec.Channel("email", subs), ln: ln, done: make(chan struct{})}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &smtpSession{sink: s}, nil }))
	s.srv.Domain = "bench.example"
	s.srv.ReadTimeout, s.srv.WriteTimeout = 30*time.Second, 30*time.Second
	s.srv.MaxMessageBytes = 1 << 20
	s.srv.MaxRecipients = 1000
	s.srv.ErrorLog = discardLogger{}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// Addr is host:port of the sink.
func (s *SMTPSink) Addr() (string, int) {
	a := s.ln.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

// Close stops the sink.
func (s *SMTPSink) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}

type smtpSession struct {
	sink *SMTPSink
	subs []int
}

func (s *smtpSession) Reset()        { s.subs = s.subs[:0] }
func (s *smtpSession) Logout() error { return nil }
func (s *smtpSession) Mail(string, *smtp.MailOptions) error {
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	sub := -1
	if local, _, ok := strings.Cut(to, "@"); ok && strings.HasPrefix(local, "s") {
		if n, err := strconv.Atoi(local[1:]); err == nil {
			sub = n
		}
	}
	s.subs = append(s.subs, sub)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	tp := textproto.NewReader(bufio.NewReader(r))
	h, err := tp.ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_, _ = io.Copy(io.Discard, tp.R)
	now := time.Now()
	id, sent, ok := parseIDNanos(h.Get("Subject"))
	for _, sub := range s.subs {
		if ok {
			s.sink.stats.Record(sub, id, sent, now)
		} else {
			s.sink.stats.Record(-1, nil, now, now)
		}
	}
	return nil
}

// Sinks are the receivers a run needs, one per channel in use.
type Sinks struct {
	Webhook *WebhookReceiver
	SMTP    *SMTPSink
	SMS     *SMSSink
}

// StartSinks starts a receiver for each channel with subscriptions.
func StartSinks(rec *Recorder, webhooks, emails, sms int) (*Sinks, error) {
	s := &Sinks{}
	var err error
	if webhooks > 0 {
		if s.Webhook, err = StartWebhookReceiver(rec, webhooks); err != nil {
			return nil, err
		}
	}
	if emails > 0 {
		if s.SMTP, err = StartSMTPSink(rec, emails); err != nil {
			s.Close(context.Background())
			return nil, err
		}
	}
	if sms > 0 {
		if s.SMS, err = StartSMSSink(rec, sms); err != nil {
			s.Close(context.Background())
			return nil, err
		}
	}
	return s, nil
}

// Close stops every sink.
func (s *Sinks) Close(context.Context) error {
	var errs []error
	if s.Webhook != nil {
		errs = append(errs, s.Webhook.Stop())
	}
	if s.SMTP != nil {
		errs = append(errs, s.SMTP.Close())
	}
	if s.SMS != nil {
		errs = append(errs, s.SMS.Close())
	}
	return errors.Join(errs...)
}

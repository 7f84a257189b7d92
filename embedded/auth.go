package embedded

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
)

// Role says what a NATS user may do on the client port.
type Role string

// Roles.
const (
	// RolePublisher publishes events (events.> or a narrower prefix) and
	// asks gather routes (hub.gather.>); it may subscribe only to its own
	// inbox, _INBOX_<user>.>, so it must connect with
	// nats.CustomInboxPrefix(InboxPrefix(user)). No $JS.API subject is
	// allowed: it cannot create, delete or purge streams, or read them.
	RolePublisher Role = "publisher"
	// RoleResponder answers requests on its service subjects (svc.> or a
	// configured list): it may subscribe to them and publish only one reply
	// to each request it received (allow_responses, MaxMsgs 1).
	RoleResponder Role = "responder"
	// RoleAdmin may do everything, like the hub itself (the nats CLI,
	// hub dlq, stream administration).
	RoleAdmin Role = "admin"
)

// Subject defaults of the roles.
const (
	// DefaultPublishPrefix is where a publisher may publish events.
	DefaultPublishPrefix = "events"
	// GatherSubjects is what a publisher may request.
	GatherSubjects = "hub.gather.>"
	// DefaultResponderSubjects is what a responder may subscribe to.
	DefaultResponderSubjects = "svc.>"
)

// User may connect to the client port. Exactly one of Password,
// PasswordBcrypt and Nkey is set.
type User struct {
	// Name is the user name; it also names the private inbox
	// (_INBOX_<name>). Letters, digits, _ and -; not starting with _.
	Name string
	// Password is the password in plain text; Start hashes it with bcrypt
	// so the server never holds it in clear. At most 72 bytes.
	Password string
	// PasswordBcrypt is a bcrypt hash of the password ($2a$..., $2b$...).
	PasswordBcrypt string
	// Nkey is the user's public nkey (U...); the client proves it holds
	// the seed by signing the server's nonce.
	Nkey string
	// Role is RolePublisher, RoleResponder or RoleAdmin.
	Role Role
	// PublishPrefix narrows a publisher to <prefix>.> (default "events",
	// e.g. "events.shop" allows events.shop.>).
	PublishPrefix string
	// Subjects are a responder's service subjects (default svc.>).
	Subjects []string
}

// InboxPrefix is the inbox prefix user must connect with
// (nats.CustomInboxPrefix) when its role restricts subscriptions.
func InboxPrefix(user string) string { return "_INBOX_" + user }

var userName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// Check reports what is wrong with u, or nil.
func (u User) Check() error {
	var errs []error
	if !userName.MatchString(u.Name) {
		errs = append(errs, fmt.Errorf("name %q must be 1-64 letters, digits, _ or -, not starting with _ or -", u.Name))
	}
	set := 0
	for _, v := range []string{u.Password, u.PasswordBcrypt, u.Nkey} {
		if v != "" {
			set++
		}
	}
	switch {
	case set > 1:
		errs = append(errs, errors.New("set one of password, password_bcrypt or nkey, not several"))
	case set == 0:
		errs = append(errs, errors.New("one of password, password_bcrypt or nkey is required"))
	case len(u.Password) > 72:
		errs = append(errs, errors.New("password must be at most 72 bytes (bcrypt's limit)"))
	case u.PasswordBcrypt != "" && !IsBcrypt(u.PasswordBcrypt):
		errs = append(errs, errors.New("password_bcrypt is not a bcrypt hash ($2a$10$...)"))
	case u.Nkey != "" && !nkeys.IsValidPublicUserKey(u.Nkey):
		errs = append(errs, fmt.Errorf("nkey must be a public user key (U...), not %s", shortKey(u.Nkey)))
	}
	switch u.Role {
	case RolePublisher:
		if err := CheckPublishPrefix(u.PublishPrefix); err != nil {
			errs = append(errs, err)
		}
	case RoleResponder:
		for _, s := range u.Subjects {
			if !ValidSubject(s, true) {
				errs = append(errs, fmt.Errorf("subject %q is not a valid NATS subject", s))
			}
		}
	case RoleAdmin:
	default:
		errs = append(errs, fmt.Errorf("role %q must be publisher, responder or admin", u.Role))
	}
	return errors.Join(errs...)
}

// CheckPublishPrefix accepts "" (the default), "events", or "events."
// followed by literal tokens.
func CheckPublishPrefix(p string) error {
	if p == "" || p == DefaultPublishPrefix {
		return nil
	}
	if !strings.HasPrefix(p, DefaultPublishPrefix+".") || !ValidSubject(p, false) {
		return fmt.Errorf("publish prefix %q must be %q or start with %q and hold no wildcards (e.g. events.shop)", p, DefaultPublishPrefix, DefaultPublishPrefix+".")
	}
	return nil
}

// ValidSubject reports whether s is a NATS subject: dot-separated
// non-empty tokens without spaces; with wildcards, * is a whole token and
// > a whole last token.
func ValidSubject(s string, wildcards bool) bool {
	if s == "" {
		return false
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		if t == "" || strings.ContainsAny(t, " \t\r\n") {
			return false
		}
		if t == "*" || (t == ">" && i == len(toks)-1) {
			if !wildcards {
				return false
			}
			continue
		}
		if strings.ContainsAny(t, "*>") {
			return false
		}
	}
	return true
}

// Permissions are what the server enforces for u (nil: everything).
func (u User) Permissions() *server.Permissions {
	switch u.Role {
	case RolePublisher:
		prefix := u.PublishPrefix
		if prefix == "" {
			prefix = DefaultPublishPrefix
		}
		return &server.Permissions{
			// JetStream answers a publish to events.* on the reply inbox,
			// so no $JS subject is needed for acknowledgements.
			Publish:   &server.SubjectPermission{Allow: []string{prefix + ".>", GatherSubjects}},
			Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(u.Name) + ".>"}},
		}
	case RoleResponder:
		subjects := u.Subjects
		if len(subjects) == 0 {
			subjects = []string{DefaultResponderSubjects}
		}
		return &server.Permissions{
			// An empty allow list denies every publish except the replies
			// allow_responses grants: one per request received.
			Publish:   &server.SubjectPermission{Allow: []string{}},
			Subscribe: &server.SubjectPermission{Allow: append([]string(nil), subjects...)},
			Response:  &server.ResponsePermission{MaxMsgs: 1, Expires: server.DEFAULT_ALLOW_RESPONSE_EXPIRATION},
		}
	}
	return nil
}

// applyAuth requires authentication on so for users plus the hub's own
// in-process user, whose key pair it returns.
func applyAuth(so *server.Options, users []User) (nkeys.KeyPair, error) {
	seen := map[string]bool{}
	for i, u := range users {
		if err := u.Check(); err != nil {
			return nil, fmt.Errorf("user %d (%s): %w", i, u.Name, err)
		}
		if seen[u.Name] {
			return nil, fmt.Errorf("user %q is listed twice", u.Name)
		}
		seen[u.Name] = true
		if u.Nkey != "" {
			so.Nkeys = append(so.Nkeys, &server.NkeyUser{Nkey: u.Nkey, Permissions: u.Permissions()})
			continue
		}
		pw := u.PasswordBcrypt
		if pw == "" {
			h, err := bcrypt.GenerateFromPassword([]byte(u.Password), bcrypt.DefaultCost)
			if err != nil {
				return nil, fmt.Errorf("user %s: hash password: %w", u.Name, err)
			}
			pw = string(h)
		}
		so.Users = append(so.Users, &server.User{Username: u.Name, Password: pw, Permissions: u.Permissions()})
	}
	// The hub itself signs the server's nonce with a key made now that
	// never leaves the process: no password to hash, store or leak, and
	// no bcrypt cost on each in-process connect.
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("internal user key: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("internal user key: %w", err)
	}
	so.Nkeys = append(so.Nkeys, &server.NkeyUser{Nkey: pub})
	return kp, nil
}

// IsBcrypt reports whether s is a bcrypt hash the server compares as one.
func IsBcrypt(s string) bool {
	if !bcryptPrefix.MatchString(s) {
		return false
	}
	_, err := bcrypt.Cost([]byte(s))
	return err == nil
}

var bcryptPrefix = regexp.MustCompile(`^\$2[abxy]\$\d{2}\$`)

// shortKey shows the start of a key in an error without echoing it whole.
func shortKey(k string) string {
	if len(k) > 6 {
		return fmt.Sprintf("%q...", k[:6])
	}
	return fmt.Sprintf("%q", k)
}

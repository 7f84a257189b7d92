package node

import (
	"fmt"
	"strings"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/hub/api"
)

// NATSAuth lists who may connect to the embedded server's client port
// (nats.auth). With no users the port is open to anyone who reaches it, so
// the hub then listens on loopback only.
type NATSAuth struct {
	// Users may connect; each user's role limits what it may do.
	Users []NATSUser `yaml:"users" validate:"dive"`
}

// NATSUser is one NATS user (nats.auth.users[]).
type NATSUser struct {
	// Name is the user name; a publisher's private inbox is _INBOX_<name>.
	Name string `yaml:"name" validate:"required"`
	// Password in clear (or password_env / password_file); hashed with
	// bcrypt at start.
	Password config.Secret `yaml:"password"`
	// PasswordBcrypt is a bcrypt hash of the password ($2a$...), so the file
	// holds no usable secret.
	PasswordBcrypt config.Secret `yaml:"password_bcrypt"`
	// Nkey is the user's public nkey (U...) instead of a password.
	Nkey string `yaml:"nkey"`
	// Role: publisher (publish events, ask gathers), responder (answer
	// requests on its subjects) or admin (everything).
	Role string `yaml:"role" validate:"oneof=publisher responder admin"`
	// PublishPrefix narrows a publisher to <prefix>.>, e.g. events.shop
	// (default events).
	PublishPrefix string `yaml:"publish_prefix"`
	// Subjects a responder may subscribe to (default [svc.>]).
	Subjects []string `yaml:"subjects"`
}

func (u *NATSUser) embedded() embedded.User {
	return embedded.User{
		Name: u.Name, Password: u.Password.Value(), PasswordBcrypt: u.PasswordBcrypt.Value(), Nkey: u.Nkey,
		Role: embedded.Role(u.Role), PublishPrefix: u.PublishPrefix, Subjects: u.Subjects,
	}
}

// Validate checks the users; paths are relative to nats.auth.
func (a *NATSAuth) Validate() error {
	var errs config.Errors
	names := map[string]int{}
	for i := range a.Users {
		u := &a.Users[i]
		p := fmt.Sprintf("users[%d]", i)
		if j, dup := names[u.Name]; dup && u.Name != "" {
			errs.Add(p+".name", "%q is already used by users[%d]", u.Name, j)
		}
		names[u.Name] = i
		if u.PublishPrefix != "" && u.Role != string(embedded.RolePublisher) {
			errs.Add(p+".publish_prefix", "only for role publisher")
		}
		if len(u.Subjects) > 0 && u.Role != string(embedded.RoleResponder) {
			errs.Add(p+".subjects", "only for role responder")
		}
		if u.Role == "" || u.Name == "" {
			continue // reported by the validate tags
		}
		if err := u.embedded().Check(); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				errs.Add(p, "%s", line)
			}
		}
	}
	return errs.Err()
}

// checkSecurity adds the rules that span sections: a port reachable from
// the network needs authentication, and the security settings of the
// embedded server need it to be embedded.
func (c *Config) checkSecurity(errs *config.Errors) {
	if c.NATS.Embedded && c.NATS.Listen != "" && !loopback(c.NATS.Listen) && len(c.NATS.Auth.Users) == 0 {
		errs.Add("nats.listen", "%q is not a loopback address and nats.auth.users is empty: anyone who reaches it could publish, read or delete streams; add users under nats.auth.users (docs/security.md) or listen on 127.0.0.1:4222", c.NATS.Listen)
	}
	if c.HTTP.Listen != "" && !loopback(c.HTTP.Listen) && len(c.HTTP.Tokens) == 0 {
		errs.Add("http.listen", "%q is not a loopback address and http.tokens is empty: the API would be open to anyone who reaches it; add tokens under http.tokens (docs/security.md) or listen on 127.0.0.1:8080", c.HTTP.Listen)
	}
	if !c.NATS.Embedded {
		if len(c.NATS.Auth.Users) > 0 {
			errs.Add("nats.auth", "only for the embedded server; an external NATS has its own users (use nats.creds_file)")
		}
		if c.NATS.TLS.Enabled() {
			errs.Add("nats.tls", "only for the embedded server; use a tls:// URL for an external NATS")
		}
	}
	if c.NATS.Embedded && c.NATS.Listen == "" && c.NATS.TLS.Enabled() {
		errs.Add("nats.tls", "needs nats.listen: in-process connections do not use TLS")
	}
}

// Warnings lists risky settings that are valid but should be deliberate:
// hub validate prints them. The config should already be valid.
func (c *Config) Warnings() []string {
	var w []string
	public := false
	if c.NATS.Embedded && c.NATS.Listen != "" && !loopback(c.NATS.Listen) {
		public = true
		if !c.NATS.TLS.Enabled() {
			w = append(w, fmt.Sprintf("nats.listen: %s is reachable from the network without TLS: passwords and events cross it in clear; set nats.tls.cert_file and key_file", c.NATS.Listen))
		}
	}
	if c.HTTP.Listen != "" && !loopback(c.HTTP.Listen) {
		public = true
		if !c.HTTP.TLS.Enabled() {
			w = append(w, fmt.Sprintf("http.listen: %s is reachable from the network without TLS: API tokens and events cross it in clear; set http.tls.cert_file and key_file (or terminate TLS in a proxy on this host)", c.HTTP.Listen))
		}
		if c.HTTP.MetricsPublic {
			w = append(w, "http.metrics_public: /metrics is open to the network: it names subscriptions, channels and event types")
		}
	}
	if public && c.Channels.Webhook.AllowPrivateNetworks {
		w = append(w, "channels.webhook.allow_private_networks: true on a hub reachable from the network: whoever can create a webhook subscription can make the hub call internal services (SSRF); use allow_cidrs for the ranges you need")
	}
	for i, t := range c.HTTP.Tokens {
		if t.HasScope(api.ScopeAdmin) && t.RateLimit.RPS == 0 {
			w = append(w, fmt.Sprintf("http.tokens[%d] (%s): admin scope without a rate limit; set rate_limit.rps", i, t.Name))
		}
	}
	if c.NATS.ClusterTLS.Enabled() {
		w = append(w, "nats.cluster_tls: set, but this hub runs no cluster routes, so it is not used")
	}
	return w
}

// secureEmbedded adds the users and TLS settings to the embedded server's
// options.
func (c *NATSConfig) secureEmbedded(o *embedded.Options) error {
	for i := range c.Auth.Users {
		o.Users = append(o.Users, c.Auth.Users[i].embedded())
	}
	if c.TLS.Enabled() {
		tc, err := c.TLS.ServerConfig()
		if err != nil {
			return fmt.Errorf("nats.tls: %w", err)
		}
		o.TLS = tc
	}
	if c.ClusterTLS.Enabled() {
		tc, err := c.ClusterTLS.MutualConfig()
		if err != nil {
			return fmt.Errorf("nats.cluster_tls: %w", err)
		}
		o.ClusterTLS = tc
	}
	return nil
}

// Package node wires a whole hub from one Config: the embedded (or
// external) NATS server, streams, router, dispatcher, channels and the HTTP
// API, with an ordered shutdown. cmd/hub serve runs one; tests and other
// programs can run one in-process.
package node

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/api"
	"github.com/hubproject/hub/hub/gather"
	"github.com/hubproject/hub/hub/render"
	"github.com/hubproject/hub/subscribers/audit"
	"github.com/hubproject/hub/subscribers/email"
	"github.com/hubproject/hub/subscribers/sms"
	"github.com/hubproject/hub/subscribers/webhook"
)

// Config is the whole configuration file.
type Config struct {
	Log    LogConfig        `yaml:"log"`
	NATS   NATSConfig       `yaml:"nats"`
	HTTP   api.Config       `yaml:"http"`
	Events hub.EventsConfig `yaml:"events"`
	// Delivery: retries, backoff, concurrency, dead letters.
	Delivery hub.DeliveryConfig `yaml:"delivery"`
	// Channels configures each channel.
	Channels ChannelsConfig `yaml:"channels"`
	// Subscriptions is the fan-out table.
	Subscriptions []hub.Subscription `yaml:"subscriptions" validate:"dive"`
	// Gather holds the scatter-gather routes.
	Gather gather.Config `yaml:"gather"`
}

// ChannelsConfig holds each channel's settings.
type ChannelsConfig struct {
	Webhook webhook.Config `yaml:"webhook"`
	// Audit records every event and delivery outcome in a hash-chained
	// trail (the AUDIT stream and, with file set, a JSONL file).
	Audit audit.Config `yaml:"audit"`
	// Email and SMS are off unless configured.
	Email *email.Config `yaml:"email"`
	SMS   *sms.Config   `yaml:"sms"`
}

// LogConfig configures the root logger.
type LogConfig struct {
	// Level: trace, debug, info, warn or error.
	Level string `yaml:"level" validate:"oneof=trace debug info warn error"`
	// Format: auto (console on a terminal, JSON otherwise), console, json.
	Format string `yaml:"format" validate:"oneof=auto console json"`
}

// NATSConfig says where the hub's NATS is: embedded (default) or external.
type NATSConfig struct {
	// Embedded runs nats-server with JetStream inside the hub.
	Embedded bool `yaml:"embedded"`
	// Listen is the client address outside clients use; empty means
	// in-process only. Embedded only.
	Listen string `yaml:"listen"`
	// StoreDir holds the JetStream file store. Embedded only.
	StoreDir string `yaml:"store_dir"`
	// Sync: default (flush on an interval) or always (fsync every write).
	Sync string `yaml:"sync" validate:"oneof=default always"`
	// MaxMemory and MaxStore cap JetStream resources (0: server default).
	MaxMemory config.ByteSize `yaml:"max_memory" validate:"gte=0"`
	MaxStore  config.ByteSize `yaml:"max_store" validate:"gte=0"`
	// MaxPayload is the largest NATS message (default 1MiB, at most 64MiB).
	MaxPayload config.ByteSize `yaml:"max_payload" validate:"gte=0,lte=67108864"`
	// URL is the external NATS deployment (embedded: false); several
	// comma-separated URLs are tried in turn.
	URL string `yaml:"url"`
	// CredsFile authenticates to the external NATS.
	CredsFile string `yaml:"creds_file"`
	// Auth lists the users of the client port (embedded only); required to
	// listen on a non-loopback address. See docs/security.md.
	Auth NATSAuth `yaml:"auth"`
	// TLS makes TLS required on the client port (embedded only).
	TLS api.TLSConfig `yaml:"tls"`
	// ClusterTLS secures cluster routes.
	ClusterTLS api.TLSConfig `yaml:"cluster_tls"`
	// Name is this node's server name; required (and unique) in a cluster.
	Name string `yaml:"name"`
	// Cluster joins the embedded server to a NATS cluster of hubs.
	Cluster ClusterConfig `yaml:"cluster"`
}

// ClusterConfig makes the embedded servers of several hubs one JetStream
// cluster: streams are replicated and every node shares the work.
type ClusterConfig struct {
	// Name is the cluster's name, the same on every node.
	Name string `yaml:"name"`
	// Listen is this node's route address (host:port), a fixed port.
	Listen string `yaml:"listen"`
	// Routes are every node's route URLs (nats://host:port), this one included.
	Routes []string `yaml:"routes"`
}

// Enabled reports whether clustering is configured.
func (c ClusterConfig) Enabled() bool { return c.Listen != "" || len(c.Routes) > 0 }

// Size is the number of nodes: the distinct routes, counting this node.
func (c ClusterConfig) Size() int {
	nodes := map[string]bool{}
	if c.Listen != "" {
		nodes[c.Listen] = true
	}
	for _, r := range c.Routes {
		if u, err := url.Parse(r); err == nil && u.Host != "" {
			nodes[u.Host] = true
		}
	}
	return max(len(nodes), 1)
}

// Replicas is the stream replica count: events.replicas, or when that is
// 0, min(3, cluster size).
func (c *Config) Replicas() int {
	if c.Events.Replicas > 0 {
		return c.Events.Replicas
	}
	if c.NATS.Embedded && c.NATS.Cluster.Enabled() {
		return min(3, c.NATS.Cluster.Size())
	}
	return 1
}

// DefaultConfig is the development default: embedded JetStream on
// loopback, data under ./data.
func DefaultConfig() Config {
	return Config{
		Log: LogConfig{Level: "info", Format: "auto"},
		NATS: NATSConfig{
			Embedded:   true,
			Listen:     "127.0.0.1:4222",
			StoreDir:   "./data/jetstream",
			Sync:       embedded.SyncDefault,
			MaxPayload: 1 << 20,
		},
		HTTP:     api.DefaultConfig(),
		Events:   hub.DefaultEventsConfig(),
		Delivery: hub.DefaultDeliveryConfig(),
		Channels: ChannelsConfig{Webhook: webhook.DefaultConfig(), Audit: defaultAudit()},
		Gather:   gather.DefaultConfig(),
	}
}

// Load reads and validates a config file.
func Load(path string) (Config, error) {
	cfg := DefaultConfig()
	if err := config.LoadFile(path, &cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// Validate checks rules that span sections.
func (c *Config) Validate() error {
	var errs config.Errors
	if c.NATS.Embedded {
		if c.NATS.StoreDir == "" {
			errs.Add("nats.store_dir", "required when nats.embedded is true")
		}
		if c.NATS.URL != "" {
			errs.Add("nats.url", "only used with nats.embedded: false; remove it or set embedded to false")
		}
	} else if c.NATS.URL == "" {
		errs.Add("nats.url", "required when nats.embedded is false")
	}
	for path, addr := range map[string]string{"nats.listen": c.NATS.Listen, "http.listen": c.HTTP.Listen} {
		if err := checkListen(addr); err != nil {
			errs.Add(path, "%v", err)
		}
	}
	if cl := c.NATS.Cluster; cl.Enabled() {
		switch {
		case !c.NATS.Embedded:
			errs.Add("nats.cluster", "only for the embedded server; an external NATS runs its own cluster")
		case cl.Name == "":
			errs.Add("nats.cluster.name", "required: the same name on every node")
		}
		if c.NATS.Name == "" {
			errs.Add("nats.name", "required in a cluster: a unique name per node, e.g. hub-1")
		}
		if err := checkListen(cl.Listen); err != nil || cl.Listen == "" || strings.HasSuffix(cl.Listen, ":0") {
			errs.Add("nats.cluster.listen", "must be host:port with a fixed port, e.g. 127.0.0.1:6222")
		} else if !loopback(cl.Listen) && !c.NATS.ClusterTLS.Enabled() {
			errs.Add("nats.cluster.listen", "%q is not a loopback address: routes to other machines need nats.cluster_tls (with verify_clients) so nobody else can join the cluster", cl.Listen)
		}
		for i, r := range cl.Routes {
			if u, err := url.Parse(r); err != nil || u.Scheme != "nats" || u.Host == "" {
				errs.Add(fmt.Sprintf("nats.cluster.routes[%d]", i), "%q must be a route URL such as nats://10.0.0.2:6222", r)
			}
		}
	}
	// A port reachable from the network needs authentication (security.go).
	c.checkSecurity(&errs)
	ids := map[string]int{}
	for i, sub := range c.Subscriptions {
		p := fmt.Sprintf("subscriptions[%d]", i)
		if j, dup := ids[sub.ID]; dup && sub.ID != "" {
			errs.Add(p+".id", "%q is already used by subscriptions[%d]", sub.ID, j)
		}
		ids[sub.ID] = i
		switch sub.Channel {
		case "":
		case "webhook":
			addPrefixed(&errs, p, webhook.CheckSubscription(&sub))
		case "email", "sms":
			if (sub.Channel == "email" && c.Channels.Email == nil) || (sub.Channel == "sms" && c.Channels.SMS == nil) {
				errs.Add(p+".channel", "channel %s is not configured: add channels.%s", sub.Channel, sub.Channel)
			}
			if _, err := render.Compile(&sub); err != nil {
				addPrefixed(&errs, p, err)
			}
		default:
			if !knownChannel(sub.Channel) {
				errs.Add(p+".channel", "unknown channel %q (known: %s)", sub.Channel, strings.Join(channelNames, ", "))
			}
		}
	}
	payload := c.NATS.MaxPayload
	if payload == 0 {
		payload = 1 << 20
	}
	if c.Events.MaxEventSize+4<<10 > payload {
		errs.Add("events.max_event_size", "must be at least 4KiB below nats.max_payload (%s) to leave room for headers", payload)
	}
	return errs.Err()
}

// checkListen accepts "" or host:port with a port from 0 (random) to 65535.
func checkListen(addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port, e.g. 127.0.0.1:8080")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("port %q must be a number from 0 to 65535", port)
	}
	return nil
}

// loopback reports whether a listen address binds only the loopback interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// channelNames are the channels a subscription may name.
var channelNames = []string{"log", "webhook", "email", "sms"}

func knownChannel(name string) bool {
	for _, n := range channelNames {
		if n == name {
			return true
		}
	}
	return false
}

func addPrefixed(errs *config.Errors, prefix string, err error) {
	if err == nil {
		return
	}
	var es config.Errors
	if errors.As(err, &es) {
		for _, e := range es {
			*errs = append(*errs, config.FieldError{Path: prefix + "." + e.Path, Reason: e.Reason})
		}
		return
	}
	errs.Add(prefix, "%v", err)
}

// defaultAudit is off in code (an in-process hub in a test does not need
// it); configs/hub.yaml turns it on.
func defaultAudit() audit.Config {
	c := audit.DefaultConfig()
	c.Enabled = false
	return c
}

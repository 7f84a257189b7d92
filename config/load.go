package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/go-playground/validator/v10"
	"go.yaml.in/yaml/v3"
)

// FieldError is one problem with one configuration value, named by its YAML
// path ("nats.store_dir", "subscriptions[2].events[0]").
type FieldError struct {
	Path   string `json:"field"`
	Reason string `json:"reason"`
}

func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Reason
	}
	return e.Path + ": " + e.Reason
}

// Errors is every problem found in one configuration, one line each.
type Errors []FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Add appends an error for path.
func (es *Errors) Add(path, format string, args ...any) {
	*es = append(*es, FieldError{Path: path, Reason: fmt.Sprintf(format, args...)})
}

// Err returns es as an error, or nil when empty.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// Validator is implemented by config structs with cross-field rules. Paths in
// the returned Errors are relative to the struct; the loader prefixes them.
type Validator interface {
	Validate() error
}

// LoadFile reads a YAML file into dst (a pointer to a struct already holding
// its defaults) and validates it. See Decode.
func LoadFile(path string, dst any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return Decode(data, dst)
}

// Decode strictly decodes YAML into dst, which holds the defaults: keys that
// are absent keep them. ${VAR} and ${VAR:-default} are expanded in scalar
// values; a Secret field "x" may be given as "x_env" or "x_file". Then struct
// tags are checked with validator/v10 and every Validator is called. All
// problems are returned together as Errors.
func Decode(data []byte, dst any) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("config: Decode needs a non-nil pointer")
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, errEOF) || err.Error() == "EOF" {
			return Check(dst) // an empty file means all defaults
		}
		return Errors{{Reason: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	d := &decoder{}
	d.decode(&root, rv.Elem(), "")
	if len(d.errs) > 0 {
		return d.errs
	}
	return Check(dst)
}

var errEOF = errors.New("EOF")

// Check runs the validate tags and every Validator in v.
func Check(v any) error {
	var errs Errors
	if err := validate.Struct(v); err != nil {
		var verrs validator.ValidationErrors
		if !errors.As(err, &verrs) {
			return err
		}
		for _, fe := range verrs {
			errs = append(errs, FieldError{Path: tagPath(fe.Namespace()), Reason: reason(fe)})
		}
	}
	walkValidators(reflect.ValueOf(v), "", &errs)
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Path < errs[j].Path })
	return errs.Err()
}

func walkValidators(v reflect.Value, path string, errs *Errors) {
	if !v.IsValid() {
		return
	}
	if v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if v.CanAddr() {
		if val, ok := v.Addr().Interface().(Validator); ok {
			addPrefixed(errs, path, val.Validate())
		}
	} else if val, ok := v.Interface().(Validator); ok {
		addPrefixed(errs, path, val.Validate())
	}
	switch v.Kind() {
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name := yamlName(f)
			if name == "-" {
				continue
			}
			walkValidators(v.Field(i), join(path, name), errs)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			walkValidators(v.Index(i), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	}
}

func addPrefixed(errs *Errors, prefix string, err error) {
	if err == nil {
		return
	}
	var es Errors
	if errors.As(err, &es) {
		for _, e := range es {
			p := e.Path
			switch {
			case p == "":
				p = prefix
			case strings.HasPrefix(p, "["):
				p = prefix + p
			default:
				p = join(prefix, p)
			}
			*errs = append(*errs, FieldError{Path: p, Reason: e.Reason})
		}
		return
	}
	*errs = append(*errs, FieldError{Path: prefix, Reason: err.Error()})
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func yamlName(f reflect.StructField) string {
	tag := f.Tag.Get("yaml")
	name, _, _ := strings.Cut(tag, ",")
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

type decoder struct {
	errs Errors
}

func (d *decoder) fail(path, format string, args ...any) {
	d.errs.Add(path, format, args...)
}

var (
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	secretType      = reflect.TypeFor[Secret]()
)

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return
		}
		d.decode(n.Content[0], v, path)
		return
	case yaml.AliasNode:
		d.decode(n.Alias, v, path)
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" or "key: ~" keeps the default
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
		return
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		node := n
		if n.Kind == yaml.ScalarNode {
			s, ok := d.expand(n.Value, path)
			if !ok {
				return
			}
			c := *n
			c.Value = s
			node = &c
		}
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(node); err != nil {
			d.fail(path, "%s", err.Error())
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(path, "must be a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			// Elements start from the zero value; list defaults are applied
			// by their owner after decoding.
			d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.fail(path, "must be a mapping")
			return
		}
		if v.Type().Key().Kind() != reflect.String {
			d.fail(path, "unsupported map key type")
			return
		}
		m := reflect.MakeMap(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			ev := reflect.New(v.Type().Elem()).Elem()
			d.decode(n.Content[i+1], ev, join(path, k))
			m.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), ev)
		}
		v.Set(m)
	case reflect.Interface:
		var x any
		if err := n.Decode(&x); err != nil {
			d.fail(path, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
			return
		}
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
	default:
		d.decodeScalar(n, v, path)
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, "must be a mapping of keys to values")
		return
	}
	t := v.Type()
	fields := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if name := yamlName(f); name != "-" {
			fields[name] = i
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i].Value, n.Content[i+1]
		p := join(path, key)
		if seen[key] {
			d.fail(p, "duplicate key")
			continue
		}
		seen[key] = true
		if idx, ok := fields[key]; ok {
			d.decode(val, v.Field(idx), p)
			continue
		}
		// x_env / x_file fill the Secret field x.
		if base, how, ok := secretRef(key); ok {
			if idx, ok := fields[base]; ok && v.Field(idx).Type() == secretType {
				if seen[base] {
					d.fail(p, "set either %s or %s, not both", base, key)
					continue
				}
				d.loadSecret(val, v.Field(idx), p, how)
				continue
			}
		}
		d.fail(p, "unknown key%s", suggest(key, fields))
	}
}

func secretRef(key string) (base, how string, ok bool) {
	for _, suf := range []string{"_env", "_file"} {
		if b, found := strings.CutSuffix(key, suf); found && b != "" {
			return b, suf[1:], true
		}
	}
	return "", "", false
}

func (d *decoder) loadSecret(n *yaml.Node, v reflect.Value, path, how string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(path, "must be a string")
		return
	}
	name, ok := d.expand(n.Value, path)
	if !ok || name == "" {
		if ok {
			d.fail(path, "must name an environment variable or file")
		}
		return
	}
	switch how {
	case "env":
		val, found := os.LookupEnv(name)
		if !found {
			d.fail(path, "environment variable %s is not set", name)
			return
		}
		v.SetString(val)
	case "file":
		b, err := os.ReadFile(name)
		if err != nil {
			d.fail(path, "cannot read secret file: %v", err)
			return
		}
		v.SetString(strings.TrimRight(string(b), "\r\n"))
	}
}

func suggest(key string, fields map[string]int) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	best, bestD := "", 3
	for _, k := range names {
		if dd := editDistance(key, k); dd < bestD {
			best, bestD = k, dd
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return fmt.Sprintf(" (known keys: %s)", strings.Join(names, ", "))
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(path, "must be a single value, not a %s", kindName(n.Kind))
		return
	}
	s, ok := d.expand(n.Value, path)
	if !ok {
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		switch strings.ToLower(s) {
		case "true", "yes", "on":
			v.SetBool(true)
		case "false", "no", "off":
			v.SetBool(false)
		default:
			d.fail(path, "must be true or false, not %q", s)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		x, err := strconv.ParseInt(s, 0, v.Type().Bits())
		if err != nil {
			d.fail(path, "must be an integer, not %q", s)
			return
		}
		v.SetInt(x)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		x, err := strconv.ParseUint(s, 0, v.Type().Bits())
		if err != nil {
			d.fail(path, "must be a non-negative integer, not %q", s)
			return
		}
		v.SetUint(x)
	case reflect.Float32, reflect.Float64:
		x, err := strconv.ParseFloat(s, v.Type().Bits())
		if err != nil {
			d.fail(path, "must be a number, not %q", s)
			return
		}
		v.SetFloat(x)
	default:
		d.fail(path, "unsupported type %s", v.Type())
	}
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}

// expand replaces ${VAR} and ${VAR:-default}. A bare $ is left alone, so
// passwords and templates containing $ survive.
func (d *decoder) expand(s, path string) (string, bool) {
	if !strings.Contains(s, "${") {
		return s, true
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), true
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			d.fail(path, "unterminated ${ in %q", s)
			return "", false
		}
		b.WriteString(s[:i])
		expr := s[i+2 : i+j]
		name, def, hasDef := strings.Cut(expr, ":-")
		val, found := os.LookupEnv(name)
		switch {
		case found && val != "":
			b.WriteString(val)
		case hasDef:
			b.WriteString(def)
		case found:
		default:
			d.fail(path, "environment variable %s is not set (use ${%s:-default} for a fallback)", name, name)
			return "", false
		}
		s = s[i+j+1:]
	}
}

package render

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Funcs returns the functions every template may call, besides Go's
// built-ins (index, len, printf, eq, and, or, not, urlquery, html, js ...):
//
//	default "x" .v        .v, or "x" when .v is empty (nil, "", 0, false, empty list or map)
//	upper .v / lower .v   upper- or lower-cased text
//	formatTime "2006-01-02" .time
//	                      a time.Time or an RFC 3339 string in a Go layout
//	json .v               .v as JSON (a string comes out quoted)
//
// The set is small on purpose: templates format notifications, business
// logic belongs in the publisher. A new map is returned on every call, so
// callers may add to it.
func Funcs() map[string]any {
	return map[string]any{
		"default":    dfault,
		"upper":      func(v any) string { return strings.ToUpper(str(v)) },
		"lower":      func(v any) string { return strings.ToLower(str(v)) },
		"formatTime": formatTime,
		"json":       toJSON,
	}
}

// dfault is sprig's default: the argument order (default first) lets it sit
// at the end of a pipeline: {{ .data.name | default "customer" }}.
func dfault(def any, v ...any) any {
	if len(v) == 0 || empty(v[0]) {
		return def
	}
	return v[0]
}

func empty(v any) bool {
	if v == nil {
		return true
	}
	if n, ok := v.(json.Number); ok {
		f, err := n.Float64()
		return err == nil && f == 0
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.String, reflect.Slice, reflect.Map, reflect.Array:
		return rv.Len() == 0
	case reflect.Bool:
		return !rv.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return rv.Uint() == 0
	case reflect.Float32, reflect.Float64:
		return rv.Float() == 0
	case reflect.Pointer, reflect.Interface:
		return rv.IsNil()
	case reflect.Struct:
		if t, ok := v.(time.Time); ok {
			return t.IsZero()
		}
	}
	return false
}

// str prints v the way a template would, except that nil is "".
func str(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

func formatTime(layout string, v any) (string, error) {
	switch t := v.(type) {
	case time.Time:
		return t.Format(layout), nil
	case *time.Time:
		if t != nil {
			return t.Format(layout), nil
		}
	case string:
		p, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return "", fmt.Errorf("formatTime: %q is not an RFC 3339 time", t)
		}
		return p.Format(layout), nil
	}
	return "", fmt.Errorf("formatTime: need a time or an RFC 3339 string, got %T", v)
}

func toJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("json: %w", err)
	}
	return string(b), nil
}

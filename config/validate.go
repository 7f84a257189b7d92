package config

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/go-playground/validator/v10"
)

// validate is the package's validator; tag names are YAML keys so errors
// name the path a user wrote.
var validate = newValidator()

func newValidator() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name := yamlName(f)
		if name == "-" {
			return ""
		}
		return name
	})
	return v
}

// tagPath turns validator's "Config.nats.store_dir" into "nats.store_dir".
func tagPath(ns string) string {
	if _, rest, ok := strings.Cut(ns, "."); ok {
		return rest
	}
	return ns
}

func reason(fe validator.FieldError) string {
	kind := fe.Kind()
	p := fe.Param()
	switch fe.Tag() {
	case "required", "required_with", "required_without", "required_if":
		return "required"
	case "oneof":
		return "must be one of: " + strings.Join(strings.Fields(p), ", ")
	case "min", "gte":
		return bound("at least", kind, p)
	case "max", "lte":
		return bound("at most", kind, p)
	case "gt":
		return bound("more than", kind, p)
	case "lt":
		return bound("less than", kind, p)
	case "hostname_port":
		return "must be host:port"
	case "url", "http_url":
		return "must be a URL"
	case "email":
		return "must be an email address"
	case "e164":
		return "must be an E.164 phone number such as +15551234567"
	case "unique":
		return "must not repeat values"
	case "dive":
		return "invalid item"
	}
	if p != "" {
		return fmt.Sprintf("fails rule %s=%s", fe.Tag(), p)
	}
	return "fails rule " + fe.Tag()
}

func bound(word string, k reflect.Kind, p string) string {
	switch k {
	case reflect.String:
		return fmt.Sprintf("must be %s %s characters long", word, p)
	case reflect.Slice, reflect.Map, reflect.Array:
		return fmt.Sprintf("must have %s %s items", word, p)
	}
	return fmt.Sprintf("must be %s %s", word, p)
}

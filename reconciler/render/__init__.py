"""Plan renderers: Terraform-style text for people, a versioned JSON form for tools. Pure."""

terraform {
  # 1.9: variable validation messages may quote the offending values.
  # OpenTofu 1.9 and later work too (scripts/tf.sh picks either).
  required_version = ">= 1.9"
}

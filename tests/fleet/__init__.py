"""A site's fleet behind real nginx with config/nginx-site-cache.example.conf."""

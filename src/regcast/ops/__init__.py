"""Operations: metrics, logs, notifications, retention (what operators watch)."""

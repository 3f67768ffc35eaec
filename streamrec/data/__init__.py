"""Reading viewing sessions and turning them into interactions: sessions, interactions, catalog, demo."""

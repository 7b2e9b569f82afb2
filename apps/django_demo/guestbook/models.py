from django.db import models


class Entry(models.Model):
    name = models.CharField(max_length=80)
    message = models.CharField(max_length=500)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]

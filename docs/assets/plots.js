// Draws the DVC plots on the results page with the site's own copy of vega-embed (no CDN).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll(".vega-plot").forEach(function (el) {
    var spec = JSON.parse(document.getElementById(el.dataset.spec).textContent);
    vegaEmbed(el, spec, { actions: false, renderer: "svg" }).then(function () {
      el.dataset.rendered = "true";
    }).catch(function (err) {
      el.dataset.rendered = "error";
      el.textContent = "plot failed: " + err;
    });
  });
});
